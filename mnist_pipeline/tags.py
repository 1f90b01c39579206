"""The name of every MLflow run tag the project writes or reads, in one place. Readers look a
tag up here; nothing else spells a tag's name."""

# A training run's group: a digest of everything that decides its result but the seed
# (tracking/groups.py), so the runs of one group differ only in seed noise.
GROUP_TAG = "group"
# The params a `dvc exp run --set-param` sweep varied.
SWEEP_TAG = "sweep"
# A digest of the trained weights: two runs with the same one trained the same model.
WEIGHTS_TAG = "weights_sha256"
# Left on a training run whose evaluation failed, holding the one-line error.
EVALUATION_ERROR_TAG = "evaluation_error"
# The process that holds a run open, so a run left RUNNING by a dead process can be told apart.
OWNER_HOST_TAG, OWNER_PID_TAG = "owner_host", "owner_pid"
# A run whose MLflow credentials went over plain http:// to another host, which the user allowed
# (tracking/store.py's ALLOW_PLAIN_HTTP): its value names that setting.
PLAIN_HTTP_TAG = "tracking.plain_http"
# A reproduction run's tag: the run it reproduced.
REPRODUCTION_TAG = "reproduction_of"
# A repeat run's tag: the batch (one `mnist-pipeline repeat`) it belongs to.
REPEAT_TAG = "repeat.batch"
# Evidence a promotion records on the model version: promotion.<what>.
PROMOTION_PREFIX = "promotion."
# The experiment's kind for MLflow 3's UI: training, not GenAI. MLflow 3.17 ignores it when it
# opens an experiment (its sidebar toggle, remembered by the browser, or the link's
# workflowType=machine_learning decides), so the links `ui` prints carry that too.
EXPERIMENT_KIND_TAG = ("mlflow.experimentKind", "custom_model_development")

# How the weights were trained: the portable NumPy mode, or Keras/XLA.
MODE_TAG = "training.mode"
PORTABLE_MODE, KERAS_MODE = "portable", "keras-xla"
# Where the weights were trained: CPU, or the GPU's name (e.g. "NVIDIA H100 80GB HBM3").
DEVICE_TAG = "training.device"
PORTABLE_TAGS = {
    "portable.kernel": "OpenBLAS's kernel, read back through threadpoolctl",
    "portable.threads": "OpenBLAS's thread count during training, read back",
    "portable.openblas": "the OpenBLAS build NumPy loaded",
    "portable.numpy_simd": "NumPy's SIMD dispatch targets found (np.show_config)",
}

# The machine a run trained on. XLA compiles the training for the CPU it runs on, so the same
# commit, params and seed give bit-identical weights on the same kind of machine only; these
# tags say whether two runs had the same one. Every tag is always set except where noted.
MACHINE_PREFIX = "machine."
MACHINE_CPU_TAG = "machine.cpu"
MACHINE_TAGS = {
    MACHINE_CPU_TAG: "the CPU model as the system names it (Linux: /proc/cpuinfo's `model name`; "
    "macOS: machdep.cpu.brand_string), or 'unknown'",
    "machine.cpu_id": "x86 Linux: vendor, family, model and stepping, which tell CPU generations "
    "apart where a virtual machine names its CPU vaguely ('AMD EPYC'); ARM Linux: implementer, "
    "part and revision (where reported)",
    "machine.isa": "the best instruction set XLA's CPU compiler targets there, in the terms of "
    "XLA_FLAGS=--xla_cpu_max_isa: AMX_FP16, AMX, AVX512_BF16, AVX512_VNNI, AVX512, AVX2, AVX, "
    "SSE4_2 (x86); SVE2, SVE, NEON (ARM); or 'other'",
    "machine.caches": "CPU 0's caches, e.g. 'L1d 32K, L1i 32K, L2 512K, L3 32768K' (where "
    "reported)",
    "machine.cpus": "os.cpu_count(): the CPUs the machine has",
    "machine.usable_cpus": "the CPUs the training process could run on (Linux: its affinity)",
    "machine.intra_op_threads": "the threads TensorFlow splits one operation over: "
    "TF_NUM_INTRAOP_THREADS when set, else the usable CPUs (TensorFlow's default); the weights "
    "depend on it (measured: 1 and 4 threads train other weights than 2)",
    "machine.arch": "platform.machine(): x86_64, aarch64, arm64, ...",
    "machine.xla_flags": "XLA_FLAGS, only when set (an --xla_cpu_max_isa there caps machine.isa)",
    "machine.tf_git_version": "tf.version.GIT_VERSION: exactly which TensorFlow build",
    "machine.tf_build": "tf.sysconfig.get_build_info()'s C++ compiler and CUDA version (where "
    "present)",
}
# The library versions that decide the weights, beside TensorFlow's build (MLflow's does not).
LIBRARY_TAGS = (
    "python_version",
    "numpy_version",
    "tensorflow_version",
    "keras_version",
    "keras_backend",
)

# Tuning: a trial's run, and the study's parent run (STUDY_TAG and ROLE_TAG).
STUDY_TAG = "tune.study"
TRIAL_TAG = "tune.trial"
STATE_TAG = "tune.state"
ROLE_TAG = "tune.role"
ERROR_TAG = "tune.error"
PRUNED_STATE = "pruned"
# The parent run's tags naming the winner, its retraining, and its margin over the defaults.
BEST_TRIAL_TAG = "tune.best_trial"
RETRAIN_RUN_TAG = "tune.retrain_run"
RETRAIN_OF_TAG = "tune.retrain_of"
DEFAULTS_TRIAL_TAG = "tune.defaults_trial"
MARGIN_TEST_TAG = "tune.margin_test"
