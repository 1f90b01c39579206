"""benchmarks/: results.json names only code and commands that exist; the suite's quick path runs
every benchmark end to end and its figures add up; helpers measure a child process."""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import subprocess
import sys

import pytest

from benchmarks import harness, run

REPO_ROOT = harness.REPO_ROOT
# A dotted name of the project's own code, wherever results.json mentions one.
PROJECT_NAME = re.compile(r"\b(?:mnist_pipeline|stages|benchmarks|team)(?:\.\w+)+")


def resolves(dotted: str) -> bool:
    """Whether `dotted` is a module, or an attribute of one, without running the module."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        module = ".".join(parts[:cut])
        try:
            if importlib.util.find_spec(module) is None:
                continue
        except ModuleNotFoundError:
            continue
        if cut == len(parts):
            return True
        target = importlib.import_module(module)
        for name in parts[cut:]:
            if not hasattr(target, name):
                return False
            target = getattr(target, name)
        return True
    return False


def known_command(command: str, cli_help: str, makefile: str) -> bool:
    words = command.split()
    if words[:2] == ["python", "-m"]:
        return resolves(words[2])
    if words[0] == "mnist-pipeline":
        return words[1] in re.search(r"\{([\w,-]+)\}", cli_help).group(1).split(",")
    if words[0] == "make":
        return re.search(rf"^{words[1]}:", makefile, re.MULTILINE) is not None
    if words[0] == "dvc":
        subcommand = [w for w in words[1:] if not w.startswith("-")]
        done = subprocess.run(["dvc", *subcommand, "--help"], capture_output=True, text=True)
        options = [w for w in words[1:] if w.startswith("-")]
        return done.returncode == 0 and all(option in done.stdout for option in options)
    return False


def unknown_names(results: dict) -> list[str]:
    """The commands and dotted names in results.json that no longer exist."""
    cli_help = subprocess.run(
        [sys.executable, "-m", "mnist_pipeline", "--help"], capture_output=True, text=True
    ).stdout
    makefile = (REPO_ROOT / "Makefile").read_text()
    commands = {c for entry in results.values() for c in entry["commands"]}
    unknown = [c for c in sorted(commands) if not known_command(c, cli_help, makefile)]
    names = set(PROJECT_NAME.findall(json.dumps(results)))
    return unknown + [name for name in sorted(names) if not resolves(name)]


def test_results_name_only_code_and_commands_that_exist():
    results = json.loads(run.RESULTS.read_text())
    assert set(results) == set(run.BENCHMARKS), "regenerate results.json: `make bench`"
    assert unknown_names(results) == []


def test_a_name_that_is_gone_is_reported():
    stale = {
        "old": {
            "commands": ["mnist-pipeline sweep", "make shortcuts", "python -m stages.train"],
            "code": ["mnist_pipeline.model._hidden_modules", "benchmarks.run.main"],
            "note": "as stages.evaluate.classification_report measured",
        }
    }
    assert unknown_names(stale) == [
        "make shortcuts",
        "mnist-pipeline sweep",
        "mnist_pipeline.model._hidden_modules",
        "stages.evaluate.classification_report",
    ]


def test_a_missing_data_file_is_one_error_line(tmp_path, capsys):
    assert run.main(["--raw", str(tmp_path / "mnist.npz"), "--output", str(tmp_path / "r")]) == 1
    error = capsys.readouterr().err
    assert error.startswith("error: ") and error.count("\n") == 1 and "dvc repro fetch" in error
    assert not (tmp_path / "r").exists()


def test_run_measures_a_child_and_raises_on_failure(tmp_path):
    timed = harness.run(
        [sys.executable, "-c", "x = bytearray(50_000_000)"], tmp_path, {}, tmp_path / "log"
    )
    assert timed.wall_seconds > 0 and timed.cpu_seconds > 0 and timed.peak_rss_mb > 50
    with pytest.raises(RuntimeError, match="went wrong"):
        harness.run(
            [sys.executable, "-c", "raise SystemExit('went wrong')"], tmp_path, {}, tmp_path / "log"
        )


def test_set_params_changes_a_copy():
    tree = {"train": {"epochs": 5, "batch_size": 128}}
    assert harness.set_params(tree, {"train.epochs": 1}) == {
        "train": {"epochs": 1, "batch_size": 128}
    }
    assert tree["train"]["epochs"] == 5


@pytest.fixture(scope="module")
def quick_results(real_mnist, tmp_path_factory) -> dict:
    """Every benchmark's quick path, once: tiny data, one round."""
    output = tmp_path_factory.mktemp("bench") / "results.json"
    command = [sys.executable, "-m", "benchmarks.run", "--quick", "--raw", str(real_mnist)]
    subprocess.run([*command, "--output", str(output)], cwd=REPO_ROOT, check=True)
    return json.loads(output.read_text())


@pytest.mark.slow
def test_quick_path_runs_every_benchmark(quick_results):
    assert set(quick_results) == set(run.BENCHMARKS)
    for entry in quick_results.values():
        assert entry["quick"] is True and entry["took_seconds"] > 0 and entry["commands"]


def wall(timed: dict) -> float:
    return timed["wall_seconds"]


@pytest.mark.slow
def test_quick_figures_add_up(quick_results):
    chapter = quick_results["chapter"]["figures"]
    script = chapter["chapter_script"]
    assert 0 < script["to_saved_model_seconds"] < wall(script)
    assert 0.1 < script["test_accuracy"] <= 1 and 0.1 < chapter["project_test_accuracy"] <= 1
    assert chapter["full_repro_over_script"] == pytest.approx(
        wall(chapter["full_repro"]) / wall(script), abs=0.01
    )
    assert chapter["full_repro_over_script_cpu"] == pytest.approx(
        chapter["full_repro"]["cpu_seconds"] / script["cpu_seconds"], abs=0.01
    )
    assert all(wall(stage) > 0 for stage in chapter["stages"].values())
    for name in ("sweep", "tune"):
        trials = quick_results[name]["figures"]
        assert trials["wall_seconds_per_trial"] == pytest.approx(
            trials["wall_seconds"] / trials["trials"], abs=0.01
        )
        assert 0 < trials["run_seconds_per_trial"] < trials["wall_seconds_per_trial"]
    team = quick_results["team"]["figures"]
    # Both walls are rounded to 0.01 s, so their difference may be off by up to 0.01 either way.
    assert team["server_extra_seconds"] == pytest.approx(
        wall(team["train_stage_to_server"]) - wall(team["train_stage_to_sqlite"]), abs=0.011
    )
    portable = quick_results["portable"]["figures"]
    assert portable["numpy_over_keras"] == pytest.approx(
        wall(portable["train_stage_numpy"]) / wall(portable["train_stage_keras"]), abs=0.01
    )
