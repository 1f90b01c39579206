"""What benchmarks share: a throw-away copy of the repository, commands timed as processes."""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ruamel.yaml import YAML

from mnist_pipeline.data.paths import declared_paths, resolve_paths

REPO_ROOT = Path(__file__).resolve().parent.parent
GIT_IDENTITY = {f"GIT_{who}_NAME": "bench" for who in ("AUTHOR", "COMMITTER")} | {
    f"GIT_{who}_EMAIL": "bench@localhost" for who in ("AUTHOR", "COMMITTER")
}
# What --quick shrinks params.yaml to: a fit of a few seconds on the real network.
QUICK_PARAMS = {"prepare.train_samples": 1000, "train.epochs": 1, "tune.validation_samples": 200}
# Studies search one param, unpruned, so that a trial costs what a sweep's experiment does.
TUNE_PARAMS = {
    "tune.space": {"train.optimizer.learning_rate": {"log_uniform": [5.0e-4, 2.0e-3]}},
    "tune.pruner": "none",
}


@dataclass(frozen=True)
class Timed:
    """What one process cost, measured from outside."""

    wall_seconds: float
    cpu_seconds: float  # its own and its children's
    peak_rss_mb: float  # the largest of itself and its children
    others_cores: float  # cores other processes on this machine kept busy meanwhile


def run(command: list[str], cwd: Path, env: dict[str, str], log: Path) -> Timed:
    """Runs `command`, its output into `log`; raises on a non-zero exit."""
    busy_before = busy_cpu_seconds()
    started = time.perf_counter()
    with log.open("w", encoding="utf-8") as output:
        child = subprocess.Popen(command, cwd=cwd, env=env, stdout=output, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)  # The child's own usage, its peak memory too.
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise RuntimeError(f"`{' '.join(command)}` failed:\n{tail}")
    cpu = usage.ru_utime + usage.ru_stime
    others = max(0.0, busy_cpu_seconds() - busy_before - cpu) / wall
    return Timed(wall, cpu, usage.ru_maxrss / 1024, others)


def busy_cpu_seconds() -> float:
    """CPU seconds all processes on this machine have used since boot (Linux /proc/stat)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def median(timings: list[Timed]) -> dict:
    """Each measure's median over repeated runs (peak memory: the largest)."""
    return {
        "wall_seconds": round(statistics.median(t.wall_seconds for t in timings), 2),
        "cpu_seconds": round(statistics.median(t.cpu_seconds for t in timings), 2),
        "peak_rss_mb": round(max(t.peak_rss_mb for t in timings)),
        "others_cores": round(max(t.others_cores for t in timings), 2),
    }


def processor() -> str:
    found = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
    return found.group(1).strip() if found else "unknown"


def yaml_file(path: Path, tree: dict | None = None) -> dict:
    """Reads a YAML file, writing `tree` into it first if given."""
    yaml = YAML(typ="safe", pure=True)
    if tree is not None:
        yaml.default_flow_style = False
        with path.open("w", encoding="utf-8") as stream:
            yaml.dump(tree, stream)
    return yaml.load(path.read_text(encoding="utf-8"))


def set_params(tree: dict, dotted: dict) -> dict:
    """A copy of a params tree with `{"train.epochs": 1, ...}` set."""
    tree = {section: dict(values) for section, values in tree.items()}
    for key, value in dotted.items():
        section, name = key.split(".", 1)
        tree[section][name] = value
    return tree


class Workspace:
    """A git repository with the working tree's files, the fetched data and its own MLflow store,
    where benchmarks run the user's commands."""

    def __init__(self, folder: Path, raw: Path, quick: bool):
        self.folder, self.repo, self.quick = folder, folder / "repo", quick
        self.rounds = 1 if quick else 2  # Of each side of a comparison, alternated.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
        self.env |= GIT_IDENTITY | {
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}",
        }
        listing = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO_ROOT,
            capture_output=True,
            check=True,
        ).stdout.decode()
        for name in filter(None, listing.split("\0")):
            if (REPO_ROOT / name).is_file():
                (self.repo / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO_ROOT / name, self.repo / name)
        self.paths = declared_paths(self.repo)
        self.commands = {
            stage: resolve_paths(spec["cmd"], self.paths)
            for stage, spec in yaml_file(self.repo / "dvc.yaml")["stages"].items()
        }
        shutil.copy2(raw, self.repo / self.paths["raw"])
        changes = TUNE_PARAMS | (QUICK_PARAMS if quick else {})
        self.params = set_params(yaml_file(self.repo / "params.yaml"), changes)
        yaml_file(self.repo / "params.yaml", self.params)
        for command in (
            ["git", "init", "-q", "-b", "main"],
            ["git", "add", "-A"],
            ["git", "commit", "-q", "-m", "benchmark copy"],
            ["dvc", "commit", "--force", "--quiet", "fetch"],  # A repro starts from fetched data.
        ):
            subprocess.run(command, cwd=self.repo, env=self.env, check=True, capture_output=True)
        # Untimed: the data every benchmark trains on; in a full run also the store, compiled
        # bytecode and warm file caches, as a user's second run finds them.
        self.run(f"dvc repro {'prepare' if quick else ''}", "first-repro")

    def run(self, command: str | list[str], log_name: str, **env: str) -> Timed:
        """Runs a command line (a string is split on spaces) in the copy."""
        argv = command.split() if isinstance(command, str) else command
        return run(argv, self.repo, self.env | env, self.folder / f"{log_name}.log")

    def runs_since(self, started: float) -> list:
        """The MLflow runs that started after `started` (time.time())."""
        import mlflow

        client = mlflow.MlflowClient(self.env["MLFLOW_TRACKING_URI"])
        experiments = [e.experiment_id for e in client.search_experiments()]
        return client.search_runs(experiments, f"attributes.start_time >= {int(started * 1000)}")
