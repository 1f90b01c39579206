"""The portable training mode (mnist_pipeline/runtime/portable.py): its settings, read back from
the libraries; the same weights whatever the usable CPUs; and, slow, the same weights on an
emulated CPU of another model (qemu-x86_64 -cpu). How reproduce judges Keras/XLA runs from
different CPUs is tested on logged runs in tests/unit/tracking/test_reproduction.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from mnist_pipeline.errors import PipelineError
from mnist_pipeline.runtime import portable
from mnist_pipeline.runtime.portable import BlasState
from mnist_pipeline.tags import MODE_TAG

PINNED = BlasState("Haswell", 2, "0.3.31", ("X86_V3",))
# Another CPU model than any test machine's own is likely to be, Intel's server line.
EMULATED_CPU = "Cascadelake-Server"
QEMU = shutil.which("qemu-x86_64")
needs_qemu = pytest.mark.skipif(
    QEMU is None, reason="qemu-x86_64 is not installed (Debian: apt-get install qemu-user)"
)

# Trains the real shapes (784 -> 512 -> 10, batches of 128) on a few generated images with
# fit_portable, the train stage's code, and prints what it ran with and the weights' digest.
TRAIN_SCRIPT = """
import json, sys
import numpy as np
from mnist_pipeline.data.mnist import weights_sha256
from mnist_pipeline.modelling.numpy_training import fit_portable
from mnist_pipeline.params import TrainParams
from mnist_pipeline.runtime import portable
from mnist_pipeline.tracking.provenance import machine_tags

images, threads = int(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
features = rng.random((images, 784), dtype=np.float32)
targets = np.eye(10, dtype=np.float32)[rng.integers(0, 10, images)]
params = TrainParams.model_validate({
    "framework": "numpy", "hidden_units": 512, "activation": "relu", "epochs": 1,
    "batch_size": 128, "threads": threads, "optimizer": {"name": "rmsprop",
    "learning_rate": 0.001, "rho": 0.9, "momentum": 0.0, "epsilon": 1e-7, "centered": False},
})
weights, _ = fit_portable(features, targets, params, seed=42)
print(json.dumps({"weights": weights_sha256(weights),
                  "tags": portable.mode_tags("numpy", threads), "machine": machine_tags()}))
"""


def run_python(code: str, *args: str, cpu: str | None = None, env=None) -> dict:
    command = [sys.executable, "-c", code, *args]
    if cpu is not None:
        command = [QEMU, "-cpu", cpu, *command]
    done = subprocess.run(
        command, capture_output=True, text=True, env=env or os.environ, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_process_without_the_settings_is_missing_exactly_those():
    assert portable.missing_settings({}) == portable.PORTABLE_ENVIRONMENT
    assert portable.missing_settings(portable.PORTABLE_ENVIRONMENT) == {}
    other = {**portable.PORTABLE_ENVIRONMENT, "OPENBLAS_CORETYPE": "SkylakeX"}
    assert portable.missing_settings(other) == {"OPENBLAS_CORETYPE": "Haswell"}


@pytest.mark.parametrize(
    ("state", "problem"),
    [
        (BlasState("SkylakeX", 2, "0.3.31", ("X86_V3",)), "SkylakeX kernel, not Haswell"),
        (BlasState("Haswell", 1, "0.3.31", ("X86_V3",)), "1 threads, not train.threads=2"),
        (BlasState("Haswell", 2, "0.3.31", ("X86_V3", "X86_V4")), "dispatches to X86_V4"),
        (BlasState("Haswell", 2, "0.3.31", ()), "no X86_V3"),
    ],
)
def test_each_setting_that_is_off_is_named(state, problem):
    assert portable.problems(PINNED, 2) == []
    (found,) = portable.problems(state, 2)
    assert problem in found


def test_the_settings_are_read_back_from_this_process_libraries():
    """conftest starts the tests with the settings, as the train stage restarts itself."""
    for threads in (1, 3):
        with portable.pinned_blas(threads) as state:
            assert (state.kernel, state.threads) == ("Haswell", threads)
            assert "X86_V3" in state.numpy_simd
    tags = portable.mode_tags("numpy", 2)
    assert tags[MODE_TAG] == "portable" and tags["portable.threads"] == "2"
    assert portable.mode_tags("keras", 2) == {MODE_TAG: "keras-xla"}


def test_a_process_started_without_the_settings_refuses_portable_training():
    env = {k: v for k, v in os.environ.items() if k not in portable.PORTABLE_ENVIRONMENT}
    code = (
        "import numpy\nfrom mnist_pipeline.runtime import portable\n"
        "from mnist_pipeline.errors import PipelineError\n"
        "try:\n    portable.mode_tags('numpy', 2)\n"
        "except PipelineError as error:\n    print(__import__('json').dumps(str(error)))\n"
        "else:\n    print('null')\n"
    )
    message = run_python(code, env={**env, "OPENBLAS_CORETYPE": "Prescott"})
    assert message.startswith("not in the portable training mode: OpenBLAS uses its ")
    assert "kernel, not Haswell" in message.partition(".")[0]
    assert "OPENBLAS_CORETYPE='Haswell'" in message and "train.framework: keras" in message


def test_restart_pinned_re_executes_the_process_with_the_settings():
    env = {k: v for k, v in os.environ.items() if k not in portable.PORTABLE_ENVIRONMENT}
    code = (
        "import json, os\nfrom mnist_pipeline.runtime.portable import restart_pinned\n"
        "restart_pinned()\nprint(json.dumps([os.environ[n] for n in "
        "('OPENBLAS_CORETYPE', 'NPY_DISABLE_CPU_FEATURES')] + [os.getpid()]))"
    )
    coretype, disabled, _ = run_python(code, env=env)
    assert coretype == "Haswell" and disabled == "X86_V4 AVX512_ICL AVX512_SPR"


def test_the_thread_count_and_weights_do_not_depend_on_the_usable_cpus():
    """OPENBLAS_NUM_THREADS alone would give one thread on a one-CPU machine; the param is set
    through threadpoolctl, which gives it whatever the CPUs."""
    everywhere = run_python(TRAIN_SCRIPT, "256", "2")
    one_cpu = run_python("import os\nos.sched_setaffinity(0, {0})\n" + TRAIN_SCRIPT, "256", "2")
    assert one_cpu["tags"]["portable.threads"] == "2"
    assert one_cpu["weights"] == everywhere["weights"]


def test_an_unpinned_run_is_refused_not_mislabelled(monkeypatch):
    monkeypatch.setattr(portable, "current_state", lambda: BlasState("SkylakeX", 2, "x", ()))
    with pytest.raises(PipelineError, match="SkylakeX kernel"):
        portable.mode_tags("numpy", 2)


@pytest.mark.slow
@needs_qemu
@pytest.mark.parametrize("threads", [1, 2])
def test_portable_mode_gives_the_same_weights_on_an_emulated_cpu(threads):
    """A few hundred images, one epoch, natively and as another CPU model: bit-identical."""
    native = run_python(TRAIN_SCRIPT, "384", str(threads))
    emulated = run_python(TRAIN_SCRIPT, "384", str(threads), cpu=EMULATED_CPU)
    assert emulated["tags"] == native["tags"]
    assert emulated["weights"] == native["weights"]

