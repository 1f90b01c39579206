"""Running the benchmark's child processes and measuring what each cost, on a machine whose two
cores other people's work shares."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ruamel.yaml import YAML

REPO_ROOT = Path(__file__).resolve().parent.parent
# The pipeline's paths, from where they are declared: dvc.yaml's vars.
PATHS = YAML(typ="safe", pure=True).load((REPO_ROOT / "dvc.yaml").read_text())["vars"][0]["paths"]
# Other processes' CPU use, in cores, above which a run is waited for (up to --max-wait
# seconds) and flagged: the two cores are shared with whoever else uses this machine.
QUIET_CORES = 0.25


@dataclass(frozen=True)
class Process:
    """What one child process cost: wall and CPU seconds, and its peak resident memory."""

    wall_seconds: float
    cpu_seconds: float
    peak_rss_mb: float
    others_cores: float  # CPU cores other processes kept busy meanwhile, on average
    output: str
    exited_at: float  # time.monotonic() once the child had exited (comparable across processes)


def run_process(command: list[str], cwd: Path, env: dict[str, str], log_file: Path) -> Process:
    """Runs a command to completion, its output into log_file; raises on a non-zero exit."""
    with log_file.open("w+", encoding="utf-8") as log:
        busy_before = busy_cpu_seconds()
        started = time.perf_counter()
        child = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        # wait4 gives this child's own resource usage, peak memory included.
        _, status, usage = os.wait4(child.pid, 0)
        exited_at = time.monotonic()
        wall = time.perf_counter() - started
        busy = busy_cpu_seconds() - busy_before
        child.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        output = log.read()
    if child.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {child.returncode}:\n{output[-3000:]}")
    cpu = usage.ru_utime + usage.ru_stime
    others = max(0.0, busy - cpu) / wall
    return Process(wall, cpu, usage.ru_maxrss / 1024, others, output, exited_at)


def busy_cpu_seconds() -> float:
    """CPU seconds all processes on this machine have used since boot (Linux /proc/stat)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def others_cores(seconds: float = 1.0) -> float:
    """How many cores other processes keep busy now, sampled over `seconds`."""
    before = busy_cpu_seconds()
    time.sleep(seconds)
    return (busy_cpu_seconds() - before) / seconds


def wait_for_quiet(max_wait: float) -> float:
    """Waits until other processes use less than QUIET_CORES, or max_wait seconds have
    passed; returns their last measured use."""
    deadline = time.perf_counter() + max_wait
    busy = others_cores()
    while busy > QUIET_CORES and time.perf_counter() < deadline:
        print(f"  waiting: other processes use {busy:.1f} cores", flush=True)
        busy = others_cores(2.0)
    return busy


def child_env(**extra: str) -> dict[str, str]:
    """This environment minus MLflow and DVC settings, so children use only what we give them."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return {**env, **extra}


def write_yaml(path: Path, tree: dict) -> None:
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    with path.open("w", encoding="utf-8") as stream:
        yaml.dump(tree, stream)


def processor_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()
