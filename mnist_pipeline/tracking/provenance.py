"""Where a run came from, logged as tags by the train stage: its commit and uncommitted code,
library versions, machine, and DVC experiment and sweep."""

from __future__ import annotations

import logging
import os
import platform
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from mnist_pipeline.errors import PipelineError
from mnist_pipeline.params import load_params, parse_params
from mnist_pipeline.runtime.tensorflow_start import start_tensorflow
from mnist_pipeline.tags import SWEEP_TAG

log = logging.getLogger(__name__)

# Changes that are not code: params are logged with the run, `dvc repro` rewrites dvc.lock and
# writes a .gitignore beside each output.
NOT_CODE = ("dvc.lock", "params.yaml", ".gitignore")

DVC_EXPERIMENT_TAGS = {"DVC_EXP_NAME": "dvc_exp_name", "DVC_EXP_BASELINE_REV": "dvc_baseline_rev"}
INTRA_OP_THREADS_VARIABLE = "TF_NUM_INTRAOP_THREADS"
# XLA's x86 ISA levels, best first, each with the CPU flags that mark it (normalized_flags:
# Linux's `avx512_vnni` and macOS's `AVX512VNNI` read the same).
X86_ISA_LEVELS = (
    ("AMX_FP16", {"amxfp16"}),
    ("AMX", {"amxbf16", "amxint8"}),
    ("AVX512_BF16", {"avx512bf16"}),
    ("AVX512_VNNI", {"avx512vnni"}),
    ("AVX512", {"avx512f"}),
    ("AVX2", {"avx2", "fma"}),
    ("AVX", {"avx"}),
    ("SSE4_2", {"sse42"}),
)
ARM_ISA_LEVELS = (("SVE2", {"sve2"}), ("SVE", {"sve"}), ("NEON", {"asimd"}))
CACHE_KINDS = {"Data": "d", "Instruction": "i", "Unified": ""}
# What macOS's sysctl reports for the tags (it has no /proc or /sys).
MACOS_CACHES = {f"hw.{name.lower()}cachesize": name for name in ("L1d", "L1i", "L2", "L3")}
MACOS_CPU_KEYS = ("brand_string", "features", "leaf7_features")
MACOS_SYSCTL_KEYS = (*(f"machdep.cpu.{key}" for key in MACOS_CPU_KEYS), *MACOS_CACHES)


def git_tags(cwd: Path | None = None) -> dict[str, str]:
    """The commit a run was made from, and whether code (not params or dvc.lock) differed."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        changed = [line[3:] for line in git("status", "--porcelain", "-uall").splitlines()]
    except (subprocess.CalledProcessError, FileNotFoundError):
        return {"git_commit": "unknown", "git_dirty": "unknown"}
    dirty = sorted(path for path in changed if Path(path).name not in NOT_CODE)
    tags = {"git_commit": commit, "mlflow.source.git.commit": commit, "git_dirty": str(bool(dirty))}
    if dirty:
        tags["git_dirty_files"] = ", ".join(dirty)[:4000]
    return tags


def environment_tags() -> dict[str, str]:
    start_tensorflow()  # Before Keras loads it: quietly.
    import keras
    import mlflow
    import numpy as np
    import tensorflow as tf

    tags = {
        "python_version": platform.python_version(),
        "numpy_version": np.__version__,
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
        "keras_backend": keras.backend.backend(),
        "mlflow_version": mlflow.__version__,
    }
    for variable, tag in DVC_EXPERIMENT_TAGS.items():
        if os.environ.get(variable):
            tags[tag] = os.environ[variable]
    tags.update(machine_tags())
    tags.update(tensorflow_build_tags(tf))
    tags.update(sweep_tag())
    return tags


def intra_op_threads(environ: Mapping[str, str], usable_cpus: int) -> int:
    """TF_NUM_INTRAOP_THREADS when a positive integer, else TensorFlow's default."""
    value = environ.get(INTRA_OP_THREADS_VARIABLE, "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else usable_cpus


def machine_tags(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The machine.* tags but TensorFlow's build, for a process with `environ` (default: this
    one's). No subprocess on Linux: it runs in every training."""
    environ = os.environ if environ is None else environ
    arch = platform.machine()
    if sys.platform == "darwin":
        cpu, flags, caches = macos_cpu(sysctl(MACOS_SYSCTL_KEYS))
        cpu_id = ""
        if arch == "arm64":
            flags |= {"asimd"}  # Every Apple CPU has NEON; sysctl does not list it.
    elif sys.platform.startswith("linux"):
        fields = first_cpu_fields()
        cpu, cpu_id = linux_cpu(fields)
        flags = normalized_flags(fields.get("flags") or fields.get("Features", ""))
        caches = linux_caches()
    else:
        cpu, cpu_id, flags, caches = platform.processor() or "unknown", "", set(), ""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    tags = {
        "machine.cpu": cpu,
        "machine.isa": isa_level(arch, flags),
        "machine.cpus": str(os.cpu_count()),
        "machine.usable_cpus": str(usable),
        "machine.intra_op_threads": str(intra_op_threads(environ, usable)),
        "machine.arch": arch,
        "machine.cpu_id": cpu_id,
        "machine.caches": caches,
        "machine.xla_flags": environ.get("XLA_FLAGS"),
    }
    return {name: value for name, value in tags.items() if value}


def tensorflow_build_tags(tf) -> dict[str, str]:
    """machine.tf_git_version and machine.tf_build of an imported TensorFlow module."""
    info = tf.sysconfig.get_build_info()
    keys = ("cpu_compiler", "cuda_version")
    build = ", ".join(f"{key} {info[key]}" for key in keys if info.get(key))
    tags = {"machine.tf_git_version": tf.version.GIT_VERSION, "machine.tf_build": build}
    return {name: value for name, value in tags.items() if value}


def isa_level(arch: str, flags: set[str]) -> str:
    """The best XLA ISA level whose flags (normalized_flags) the CPU has."""
    if arch.lower() in ("x86_64", "amd64", "i386", "i686"):
        levels = X86_ISA_LEVELS
    elif arch.lower() in ("aarch64", "arm64"):
        levels = ARM_ISA_LEVELS
    else:
        return "other"
    return next((level for level, needed in levels if needed <= flags), "other")


def normalized_flags(flags: str) -> set[str]:
    return {flag.lower().replace("_", "").replace(".", "") for flag in flags.split()}


def first_cpu_fields(cpuinfo: str = "/proc/cpuinfo") -> dict[str, str]:
    """The fields of the first processor in /proc/cpuinfo (the rest is slow on big machines)."""
    fields: dict[str, str] = {}
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as lines:
            for line in lines:
                if not line.strip():
                    if fields:
                        break
                    continue
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def linux_cpu(fields: dict[str, str]) -> tuple[str, str]:
    """The CPU's model name and id from first_cpu_fields (x86 and ARM name them differently)."""
    x86 = ("vendor_id", "cpu family", "model", "stepping")
    arm = ("CPU implementer", "CPU part", "CPU variant", "CPU revision")
    if all(key in fields for key in x86):
        vendor, family, model, stepping = (fields[key] for key in x86)
        cpu_id = f"{vendor} family {family} model {model} stepping {stepping}"
    elif all(key in fields for key in arm):
        implementer, part, variant, revision = (fields[key] for key in arm)
        cpu_id = f"implementer {implementer} part {part} variant {variant} revision {revision}"
    else:
        cpu_id = ""
    # platform.processor() would run `uname -p` on Linux, and names no model there anyway.
    return fields.get("model name") or "unknown", cpu_id


def linux_caches(cpu: str = "/sys/devices/system/cpu/cpu0/cache") -> str:
    caches = []
    for index in sorted(Path(cpu).glob("index*")):
        try:
            level, kind, size = (
                (index / name).read_text().strip() for name in ("level", "type", "size")
            )
        except OSError:
            continue
        caches.append(f"L{level}{CACHE_KINDS.get(kind, kind)} {size}")
    return ", ".join(caches)


def sysctl(keys: tuple[str, ...]) -> dict[str, str]:
    """`sysctl` values by name; names the system does not know are left out."""
    try:
        output = subprocess.run(["sysctl", *keys], capture_output=True, text=True).stdout
    except OSError:
        return {}
    values = (line.partition(":") for line in output.splitlines())
    return {key.strip(): value.strip() for key, _, value in values}


def macos_cpu(values: dict[str, str]) -> tuple[str, set[str], str]:
    """The CPU's name, flags and caches from macOS's sysctl values."""
    flags = normalized_flags(
        f"{values.get('machdep.cpu.features', '')} {values.get('machdep.cpu.leaf7_features', '')}"
    )
    caches = [
        f"{name} {int(values[key]) // 1024}K"
        for key, name in MACOS_CACHES.items()
        if values.get(key, "").isdigit() and int(values[key])
    ]
    cpu = values.get("machdep.cpu.brand_string") or platform.processor() or "unknown"
    return cpu, flags, ", ".join(caches)


def sweep_tag(params_file: str = "params.yaml") -> dict[str, str]:
    """In a DVC experiment, `sweep`: the baseline commit and the params changed from it
    (`1a2b3c4:train.optimizer.rho`), shared by one `dvc exp run -S` sweep's runs."""
    baseline = os.environ.get("DVC_EXP_BASELINE_REV")
    if not baseline:
        return {}
    try:
        show = ["git", "show", f"{baseline}:./{params_file}"]
        before = subprocess.run(show, capture_output=True, text=True, check=True).stdout
        old = parse_params(YAML(typ="safe", pure=True).load(before)).flat()
        new = load_params(params_file).flat()
    except (subprocess.CalledProcessError, OSError, YAMLError, PipelineError) as error:
        log.warning("no sweep tag: cannot compare params with %s (%s)", baseline[:7], error)
        return {}
    changed = sorted(key for key in old.keys() | new.keys() if old.get(key) != new.get(key))
    return {SWEEP_TAG: f"{baseline[:7]}:{','.join(changed) or 'baseline'}"}
