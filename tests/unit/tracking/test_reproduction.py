"""`mnist-pipeline reproduce`: what a run recorded decides whether and how it can be run again.
The real reproduction (a worktree, `dvc repro`, a matching run) is in test_experiments_e2e.py."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
from fixtures.tiny_store import run_cli

from conftest import git
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.tags import MACHINE_CPU_TAG, REPRODUCTION_TAG
from mnist_pipeline.tracking import reproduction as reproduce

PARAMS_YAML = "train:\n  epochs: 1\n"


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A git repository with a pipeline file, as the current folder; returns its commit."""
    folder = tmp_path / "repo"
    folder.mkdir()
    (folder / "dvc.yaml").write_text("stages: {}\n")
    git(folder, "init", "-q")
    git(folder, "add", "-A")
    git(folder, "commit", "-q", "-m", "pipeline")
    monkeypatch.chdir(folder)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    return folder


def messages(stderr: str) -> list[str]:
    """The command's own lines, without MLflow's logging."""
    return [line for line in stderr.splitlines() if line.startswith(("error:", "warning:"))]


def logged_run(store: str, tags: dict, params_yaml: str | None = PARAMS_YAML):
    client = mlflow.MlflowClient(store)
    experiment = client.get_experiment_by_name("mnist-mlp")
    if experiment is None:
        artifacts = Path(store.removeprefix("sqlite:///")).parent / "mlartifacts"
        experiment_id = client.create_experiment("mnist-mlp", artifact_location=artifacts.as_uri())
    else:
        experiment_id = experiment.experiment_id
    run = client.create_run(experiment_id, tags=tags, run_name="original")
    if params_yaml is not None:
        client.log_text(run.info.run_id, params_yaml, "params.yaml")
    client.set_terminated(run.info.run_id)
    return client.get_run(run.info.run_id)


def test_recipe_is_the_commit_and_params_the_run_recorded(mlflow_store):
    run = logged_run(mlflow_store, {"git_commit": "a" * 40, "git_dirty": "False"})
    mlflow.set_tracking_uri(mlflow_store)
    original, recipe = reproduce.load_recipe(run.info.run_id)
    assert original.info.run_id == recipe.run_id == run.info.run_id
    assert (recipe.commit, recipe.params_yaml, recipe.run_name) == (
        "a" * 40,
        PARAMS_YAML,
        "original",
    )
    assert recipe.warnings == ()


def test_a_dirty_run_is_reproduced_with_a_warning_that_says_so(mlflow_store):
    tags = {"git_commit": "b" * 40, "git_dirty": "True", "git_dirty_files": "stages/train.py"}
    recipe = reproduce.recipe_from_run(logged_run(mlflow_store, tags), PARAMS_YAML)
    (warning,) = recipe.warnings
    assert "uncommitted code changes (stages/train.py)" in warning
    assert f"runs commit {'b' * 12} without them, so it may differ" in warning


@pytest.mark.parametrize(
    ("tags", "params_yaml", "message"),
    [
        ({"git_commit": "unknown"}, PARAMS_YAML, "records no git commit"),
        ({}, PARAMS_YAML, "records no git commit"),
        ({"git_commit": "c" * 40}, None, "has no params.yaml artifact"),
    ],
)
def test_runs_that_cannot_be_reproduced_say_why(mlflow_store, tags, params_yaml, message):
    run = logged_run(mlflow_store, tags, params_yaml)
    mlflow.set_tracking_uri(mlflow_store)
    with pytest.raises(PipelineError, match=message):
        reproduce.load_recipe(run.info.run_id)


def test_unknown_run_id_is_a_one_line_error(mlflow_store, repo, capsys):
    logged_run(mlflow_store, {"git_commit": "d" * 40})
    assert run_cli("reproduce", "0" * 32) == 2
    (error,) = messages(capsys.readouterr().err)
    assert error.startswith(f"error: run {'0' * 32} is not in the MLflow store")


def test_with_no_store_an_unknown_run_is_one_error_and_leaves_no_store(repo, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert run_cli("reproduce", "0" * 32) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: no MLflow store at sqlite:///") and error.count("\n") == 1
    assert not (repo / "mlflow.db").exists()


def test_a_commit_that_is_gone_is_a_clear_error_after_the_dirty_warning(mlflow_store, repo, capsys):
    tags = {"git_commit": "e" * 40, "git_dirty": "True", "git_dirty_files": "x.py"}
    run = logged_run(mlflow_store, tags)
    assert run_cli("reproduce", run.info.run_id) == 2
    lines = messages(capsys.readouterr().err)
    assert len(lines) == 2
    assert lines[0].startswith(f"warning: run {run.info.run_id} was made from a working tree")
    assert lines[1] == (
        f"error: commit {'e' * 12} of run {run.info.run_id} is not in this repository ({repo}): "
        f"it was rebased away or never fetched; fetch it (`git fetch origin {'e' * 40}`) and try "
        "again"
    )
    assert len(git(repo, "worktree", "list").splitlines()) == 1  # nothing was set up


def test_checks_compare_accuracy_weights_and_data(mlflow_store):
    client = mlflow.MlflowClient(mlflow_store)

    def finished(accuracy, weights):
        run = logged_run(mlflow_store, {"weights_sha256": weights, "data.test_sha256": "t"})
        client.log_param(run.info.run_id, "data.train_sha256", "d")
        client.log_metric(run.info.run_id, "test_accuracy", accuracy)
        return client.get_run(run.info.run_id)

    original = finished(0.97, "w1")
    same = reproduce.compare(original, finished(0.97, "w1"))
    assert [c.name for c in same] == [
        "test_accuracy",
        "weights_sha256",
        "data.train_sha256",
        "data.test_sha256",
    ]
    assert all(check.matches for check in same)
    different = reproduce.compare(original, finished(0.96, "w2"))
    assert [c.name for c in different if not c.matches] == ["test_accuracy", "weights_sha256"]


# Two machines as the train stage tags them (provenance.environment_tags), with the same
# libraries; the accuracies are float32 values, as Keras' metrics are logged.
LIBRARIES = {
    "python_version": "3.11.7",
    "numpy_version": "2.4.6",
    "tensorflow_version": "2.21.0",
    "keras_version": "3.15.1",
    "keras_backend": "tensorflow",
}
EPYC = {
    "machine.cpu": "AMD EPYC",
    "machine.cpu_id": "AuthenticAMD family 25 model 1 stepping 1",
    "machine.isa": "AVX2",
    "machine.caches": "L1d 32K, L1i 32K, L2 512K, L3 32768K",
    "machine.cpus": "2",
    "machine.usable_cpus": "2",
    "machine.arch": "x86_64",
    "machine.tf_git_version": "v2.21.0-rc1-5-ga481b10260d",
    "machine.tf_build": "cpu_compiler clang, cuda_version 12.5.1",
    **LIBRARIES,
}
XEON = {
    **EPYC,
    "machine.cpu": "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz",
    "machine.cpu_id": "GenuineIntel family 6 model 106 stepping 6",
    "machine.isa": "AVX512_VNNI",
}
OLD_RUN = LIBRARIES  # logged before machine tags


@pytest.fixture(scope="module")
def verdict_store(tmp_path_factory) -> str:
    """One SQLite store for the verdict tests (each makes its own runs): a new store takes a
    second or two to create."""
    return f"sqlite:///{tmp_path_factory.mktemp('verdicts') / 'mlflow.db'}"


def float32(value: float) -> float:
    return float(np.float32(value))


def finished(store, tags, accuracy=0.9817, weights="7765f48a", train="d1", test="t1"):
    """A run as train and evaluate log it: its tags, weights digest, data digests, accuracy."""
    client = mlflow.MlflowClient(store)
    run = logged_run(store, {**tags, "weights_sha256": weights, "data.test_sha256": test})
    client.log_param(run.info.run_id, "data.train_sha256", train)
    if accuracy is not None:
        client.log_metric(run.info.run_id, "test_accuracy", float32(accuracy))
    return client.get_run(run.info.run_id)


def test_identical_weights_are_a_reproduction(verdict_store):
    verdict = reproduce.judge(finished(verdict_store, EPYC), finished(verdict_store, EPYC))
    assert verdict.case is reproduce.Case.IDENTICAL and verdict.exit_status == 0
    assert verdict.lines[0].split() == ["test_accuracy", "0.9817", "0.9817", "match"]
    assert verdict.lines[-2] == (
        "  the same machine and libraries: AMD EPYC, AVX2, AuthenticAMD family 25 model 1 "
        "stepping 1; TensorFlow 2.21.0"
    )
    assert verdict.lines[-1] == "reproduced: same test accuracy, weights and data"


def test_other_weights_from_another_cpu_within_tolerance_pass_and_name_what_differs(
    verdict_store,
):
    original = finished(verdict_store, XEON, accuracy=0.9819, weights="5c6ad010")
    verdict = reproduce.judge(original, finished(verdict_store, EPYC))
    assert verdict.case is reproduce.Case.OTHER_MACHINE and verdict.exit_status == 0
    assert verdict.lines[:2] == (
        "  test_accuracy      0.9819               0.9817               within 0.002",
        "  weights_sha256     5c6ad010             7765f48a             DIFFERS",
    )
    assert verdict.lines[4:-1] == (
        "  the machines or libraries differ (original -> reproduction):",
        "    machine.cpu            Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz -> AMD EPYC",
        "    machine.cpu_id         GenuineIntel family 6 model 106 stepping 6 -> AuthenticAMD "
        "family 25 model 1 stepping 1",
        "    machine.isa            AVX512_VNNI -> AVX2",
    )
    assert verdict.lines[-1] == (
        "reproduced within tolerance: the weights differ, as they may on another machine or "
        "library build (XLA compiles for each CPU), and test accuracy agrees within 0.002 "
        "(0.9819 -> 0.9817)"
    )


def test_other_weights_on_the_same_machine_fail_even_with_the_same_accuracy(verdict_store):
    original = finished(verdict_store, EPYC, weights="7765f48a")
    verdict = reproduce.judge(original, finished(verdict_store, EPYC, weights="0badf00d"))
    assert verdict.case is reproduce.Case.SAME_MACHINE and verdict.exit_status == 1
    assert verdict.lines[-1] == (
        "not reproduced: the weights differ on the same machine and libraries, where the same "
        "commit, params and seed give bit-identical weights"
    )


def test_another_machine_does_not_excuse_accuracy_outside_the_tolerance(verdict_store):
    original = finished(verdict_store, XEON, accuracy=0.9819, weights="5c6ad010")
    verdict = reproduce.judge(original, finished(verdict_store, EPYC, accuracy=0.9790))
    assert verdict.case is reproduce.Case.ACCURACY and verdict.exit_status == 1
    assert verdict.lines[0].split() == ["test_accuracy", "0.9819", "0.979", "DIFFERS"]
    assert verdict.lines[-1] == (
        "not reproduced: test accuracy moved more than the 0.002 another machine may explain "
        "(0.9819 -> 0.9790)"
    )


@pytest.mark.parametrize(
    ("reproduced_accuracy", "case"),
    [
        (0.9799, reproduce.Case.OTHER_MACHINE),  # 20 images fewer
        (0.9839, reproduce.Case.OTHER_MACHINE),  # 20 more
        (0.9798, reproduce.Case.ACCURACY),  # 21 fewer
        (0.9840, reproduce.Case.ACCURACY),
    ],
)
def test_the_tolerance_is_20_test_images_either_way(verdict_store, reproduced_accuracy, case):
    original = finished(verdict_store, XEON, accuracy=0.9819, weights="5c6ad010")
    reproduced = finished(verdict_store, EPYC, accuracy=reproduced_accuracy)
    assert reproduce.judge(original, reproduced).case is case


@pytest.mark.parametrize(
    ("tags", "weights", "digests"),
    [
        (EPYC, "7765f48a", {"train": "d2"}),  # identical weights, same machine
        (EPYC, "0badf00d", {"test": "t2"}),
        (XEON, "5c6ad010", {"train": "d2"}),  # another machine, accuracy within tolerance
        (OLD_RUN, "5c6ad010", {"test": "t2"}),  # machine unknown
    ],
)
def test_other_data_is_a_failure_whatever_the_rest(verdict_store, tags, weights, digests):
    original = finished(verdict_store, tags, weights=weights)
    verdict = reproduce.judge(original, finished(verdict_store, EPYC, **digests))
    assert verdict.case is reproduce.Case.DATA and verdict.exit_status == 1
    (name,) = {"train": ["data.train_sha256"], "test": ["data.test_sha256"]}[next(iter(digests))]
    assert verdict.lines[-1] == (
        f"not reproduced: the data differs ({name}): the runs did not train or test on the same "
        "images"
    )


def test_a_run_from_before_machine_tags_is_judged_by_accuracy_and_says_it_cannot_tell(
    verdict_store,
):
    original = finished(verdict_store, OLD_RUN, accuracy=0.9819, weights="5c6ad010")
    verdict = reproduce.judge(original, finished(verdict_store, EPYC))
    assert verdict.case is reproduce.Case.UNKNOWN_MACHINE and verdict.exit_status == 0
    assert verdict.lines[-2:] == (
        "  cannot tell whether the machines differ: the original run records no machine (logged "
        "before machine tags)",
        "reproduced within tolerance: the weights differ and test accuracy agrees within 0.002 "
        "(0.9819 -> 0.9817); whether another machine explains the weights is unknown",
    )
    both_old = reproduce.judge(original, finished(verdict_store, OLD_RUN, accuracy=0.9790))
    assert both_old.case is reproduce.Case.ACCURACY and both_old.exit_status == 1
    assert both_old.lines[-2] == (
        "  cannot tell whether the machines differ: neither run records its machine (logged "
        "before machine tags)"
    )


def test_library_versions_count_even_where_the_machine_is_unknown(verdict_store):
    original = finished(verdict_store, {**OLD_RUN, "tensorflow_version": "2.20.0"}, weights="5c")
    verdict = reproduce.judge(original, finished(verdict_store, EPYC))
    assert verdict.case is reproduce.Case.OTHER_MACHINE
    assert "    tensorflow_version     2.20.0 -> 2.21.0" in verdict.lines


def test_xla_flags_set_on_one_side_only_make_the_machines_differ(verdict_store):
    original = finished(verdict_store, EPYC, weights="5c6ad010")
    flagged = {**EPYC, "machine.xla_flags": "--xla_cpu_max_isa=SSE4_2"}
    verdict = reproduce.judge(original, finished(verdict_store, flagged))
    assert verdict.case is reproduce.Case.OTHER_MACHINE
    assert "    machine.xla_flags      not set -> --xla_cpu_max_isa=SSE4_2" in verdict.lines


def test_a_run_without_test_accuracy_is_not_a_reproduction(verdict_store):
    original = finished(verdict_store, XEON, weights="5c6ad010")
    verdict = reproduce.judge(original, finished(verdict_store, EPYC, accuracy=None))
    assert verdict.case is reproduce.Case.INCOMPLETE and verdict.exit_status == 1
    assert verdict.lines[0].split() == ["test_accuracy", "0.9817", "-", "NOT", "RECORDED"]
    assert verdict.lines[-1] == "not reproduced: test_accuracy not recorded by both runs"


def test_same_weights_with_another_accuracy_is_a_failure(verdict_store):
    original = finished(verdict_store, EPYC)
    verdict = reproduce.judge(original, finished(verdict_store, EPYC, accuracy=0.9816))
    assert verdict.case is reproduce.Case.EVALUATION and verdict.exit_status == 1


def test_the_reproduction_is_tagged_with_this_machine_when_mlflow_creates_it():
    environ = {"XLA_FLAGS": "--xla_cpu_max_isa=AVX2", "TF_NUM_INTRAOP_THREADS": "3"}
    recipe = reproduce.Recipe("f" * 32, "pupal-gaze", "a" * 40, PARAMS_YAML)
    context = reproduce.run_context(recipe, environ)
    assert context[REPRODUCTION_TAG] == "f" * 32
    assert context["mlflow.runName"] == "pupal-gaze-repro"
    # The settings the reproduction's stages get, not this process's.
    assert context["machine.xla_flags"] == "--xla_cpu_max_isa=AVX2"
    assert context["machine.intra_op_threads"] == "3"
    assert MACHINE_CPU_TAG in context and "machine.isa" in context


@pytest.mark.parametrize(
    ("tags", "settings"),
    [
        # The thread count the original trained with, and its XLA_FLAGS, or none.
        (
            {**EPYC, "machine.intra_op_threads": "2", "machine.usable_cpus": "8"},
            (("TF_NUM_INTRAOP_THREADS", "2"), ("XLA_FLAGS", None)),
        ),
        (
            {**EPYC, "machine.intra_op_threads": "4", "machine.xla_flags": "--xla_cpu_max_isa=AVX"},
            (("TF_NUM_INTRAOP_THREADS", "4"), ("XLA_FLAGS", "--xla_cpu_max_isa=AVX")),
        ),
        # Before the thread-count tag: TensorFlow's default, one per usable CPU.
        (
            {**EPYC, "machine.usable_cpus": "2"},
            (("TF_NUM_INTRAOP_THREADS", "2"), ("XLA_FLAGS", None)),
        ),
        # Before machine tags: nothing known, nothing replayed.
        ({}, ()),
    ],
)
def test_the_reproduction_replays_the_original_thread_count_and_xla_flags(
    verdict_store, tags, settings
):
    original = finished(verdict_store, {**tags, "git_commit": "a" * 40})
    recipe = reproduce.recipe_from_run(original, PARAMS_YAML)
    assert recipe.settings == settings
    line = reproduce.settings_line(recipe)
    assert (line is None) == (not settings)


def test_the_reproduction_trains_with_the_replayed_settings(monkeypatch, tmp_path):
    """What run_pipeline hands DVC: the original's settings over this process's."""
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_max_isa=SSE4_2")
    monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", "7")
    seen = []

    def git(cwd, *args):  # `git worktree add --detach <folder> <commit>` makes the folder
        if args[:2] == ("worktree", "add"):
            Path(args[-2]).mkdir(parents=True)

    monkeypatch.setattr(reproduce, "git", git)
    monkeypatch.setattr(
        reproduce,
        "dvc",
        lambda cwd, *args, env=None, capture=False: seen.append(env) or str(tmp_path),
    )
    recipe = reproduce.Recipe(
        "f" * 32,
        "x",
        "a" * 40,
        PARAMS_YAML,
        (),
        (("TF_NUM_INTRAOP_THREADS", "2"), ("XLA_FLAGS", None)),
    )
    reproduce.run_pipeline(recipe, tmp_path, "sqlite:///x.db")
    for env in filter(None, seen):
        assert env["TF_NUM_INTRAOP_THREADS"] == "2" and "XLA_FLAGS" not in env
        context = json.loads(env["MLFLOW_RUN_CONTEXT"])
        assert context["machine.intra_op_threads"] == "2" and "machine.xla_flags" not in context
    assert len([env for env in seen if env]) == 2  # the data stage, then train and evaluate


@pytest.mark.parametrize(
    ("tags", "status", "conclusion"),
    [
        (XEON, 0, "reproduced within tolerance: the weights differ"),
        (EPYC, 1, "not reproduced: the weights differ on the same machine and libraries"),
    ],
)
def test_the_command_prints_the_verdict_and_exits_with_it(
    mlflow_store, repo, monkeypatch, capsys, tags, status, conclusion
):
    original = finished(mlflow_store, {**tags, "git_commit": "a" * 40}, 0.9819, "5c6ad010")
    reproduction = finished(mlflow_store, EPYC)
    monkeypatch.setattr(reproduce, "reproduce", lambda *args, **kwargs: reproduction)
    assert run_cli("reproduce", original.info.run_id) == status
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "with the original run's settings: TF_NUM_INTRAOP_THREADS=2, XLA_FLAGS unset"
    assert lines[2] == f"reproduction: run {reproduction.info.run_id} (original)"
    assert lines[-1].startswith(conclusion)


def test_a_validation_split_is_compared_when_the_original_had_one(verdict_store):
    """A tuning trial chose on its validation images: other ones are other data. A run without
    a split (the default) has no digest to compare and shows no such line."""
    client = mlflow.MlflowClient(verdict_store)
    with_split = []
    for digest in ("v1", "v2"):
        run = finished(verdict_store, EPYC)
        client.log_param(run.info.run_id, "data.validation_sha256", digest)
        with_split.append(client.get_run(run.info.run_id))
    verdict = reproduce.judge(*with_split)
    assert verdict.case is reproduce.Case.DATA
    assert "(data.validation_sha256)" in verdict.lines[-1]
    plain = reproduce.judge(finished(verdict_store, EPYC), finished(verdict_store, EPYC))
    assert not any("validation" in line for line in plain.lines)
    assert plain.case is reproduce.Case.IDENTICAL


# A portable-mode run (train.framework: numpy) as log_run_inputs tags it.
PORTABLE = {
    "training.mode": "portable",
    "portable.kernel": "Haswell",
    "portable.threads": "2",
    "portable.openblas": "0.3.31.188.0",
    "portable.numpy_simd": "X86_V3",
}


def test_a_portable_run_with_the_same_weights_on_another_cpu_is_identical(verdict_store):
    original = finished(verdict_store, {**XEON, **PORTABLE}, weights="1f2e3d4c")
    verdict = reproduce.judge(
        original, finished(verdict_store, {**EPYC, **PORTABLE}, weights="1f2e3d4c")
    )
    assert verdict.case is reproduce.Case.IDENTICAL and verdict.exit_status == 0
    assert verdict.lines[-1].startswith("reproduced: identical weights, test accuracy and data on")
    assert "any x86-64 CPU with AVX2 and FMA" in verdict.lines[-1]


def test_a_portable_run_is_not_excused_by_another_cpu(verdict_store):
    original = finished(verdict_store, {**XEON, **PORTABLE}, weights="1f2e3d4c")
    reproduced = finished(verdict_store, {**EPYC, **PORTABLE}, weights="0badf00d")
    verdict = reproduce.judge(original, reproduced)
    assert verdict.case is reproduce.Case.PORTABLE_DIFFERS and verdict.exit_status == 1
    assert "another CPU does not explain it" in verdict.lines[-1]


def test_a_portable_run_on_another_openblas_build_is_judged_within_tolerance(verdict_store):
    original = finished(verdict_store, {**XEON, **PORTABLE}, weights="1f2e3d4c")
    newer = {**EPYC, **PORTABLE, "portable.openblas": "0.3.32"}
    verdict = reproduce.judge(original, finished(verdict_store, newer, weights="0badf00d"))
    assert verdict.case is reproduce.Case.OTHER_MACHINE and verdict.exit_status == 0
    assert "    portable.openblas      0.3.31.188.0 -> 0.3.32" in verdict.lines
