"""The portable mode's process settings, which make NumPy training give bit-identical weights on
any x86-64 CPU with AVX2 and FMA (docs/reproducibility.md): OpenBLAS's kernel pinned (it otherwise
sums in a per-CPU order), NumPy's AVX-512 loops off, `train.threads` set through threadpoolctl."""

from __future__ import annotations

import contextlib
import os
import platform
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from mnist_pipeline.errors import PipelineError
from mnist_pipeline.tags import KERAS_MODE, MODE_TAG, PORTABLE_MODE

PORTABLE_KERNEL = "Haswell"
# NumPy 2.4's dispatch targets above X86_V3 (AVX2, FMA3...): `np.show_runtime()` lists them.
# Naming one the CPU lacks is no error, so the same value serves every CPU.
NUMPY_DISABLED_FEATURES = ("X86_V4", "AVX512_ICL", "AVX512_SPR")
NUMPY_REQUIRED_FEATURE = "X86_V3"
PORTABLE_ENVIRONMENT = {
    "OPENBLAS_CORETYPE": PORTABLE_KERNEL,
    "NPY_DISABLE_CPU_FEATURES": " ".join(NUMPY_DISABLED_FEATURES),
}


def missing_settings(environ: Mapping[str, str]) -> dict[str, str]:
    """The PORTABLE_ENVIRONMENT variables environ lacks or sets otherwise."""
    return {
        name: value for name, value in PORTABLE_ENVIRONMENT.items() if environ.get(name) != value
    }


def restart_pinned() -> None:
    """Re-executes this process with PORTABLE_ENVIRONMENT when it lacks it (the libraries read it
    when they load). Call it first thing in an entry point."""
    missing = missing_settings(os.environ)
    # Only x86-64 has the Haswell kernel; elsewhere pinned_blas refuses portable runs.
    if not missing or platform.machine().lower() not in ("x86_64", "amd64"):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], {**os.environ, **missing})


@dataclass(frozen=True)
class BlasState:
    """What this process's NumPy computes with, as the libraries report it."""

    kernel: str
    threads: int
    openblas: str
    numpy_simd: tuple[str, ...]


def current_state() -> BlasState:
    """Reads NumPy's OpenBLAS (threadpoolctl) and NumPy's dispatch (np.show_config) back."""
    import numpy as np
    from threadpoolctl import threadpool_info

    blas = [info for info in threadpool_info() if info.get("internal_api") == "openblas"]
    if not blas:
        raise PipelineError(
            "portable training needs NumPy built with OpenBLAS (PyPI's wheels are), but this "
            "NumPy loaded none; reinstall numpy from PyPI, or set train.framework: keras"
        )
    # NumPy's own OpenBLAS (scipy's, when loaded, has the same kernel and threads).
    info = next((info for info in blas if "numpy" in info["filepath"]), blas[0])
    found = np.show_config(mode="dicts").get("SIMD Extensions", {}).get("found", [])
    kernel, version = str(info.get("architecture")), str(info.get("version"))
    return BlasState(kernel, int(info["num_threads"]), version, tuple(found))


def problems(state: BlasState, threads: int) -> list[str]:
    """Why state is not the portable mode with `threads` threads; empty when it is."""
    found = []
    if state.kernel != PORTABLE_KERNEL:
        found.append(f"OpenBLAS uses its {state.kernel} kernel, not {PORTABLE_KERNEL}")
    if state.threads != threads:
        found.append(f"OpenBLAS runs {state.threads} threads, not train.threads={threads}")
    above = sorted(set(state.numpy_simd) & set(NUMPY_DISABLED_FEATURES))
    if above:
        found.append(f"NumPy dispatches to {', '.join(above)}")
    if NUMPY_REQUIRED_FEATURE not in state.numpy_simd:
        found.append(f"NumPy found no {NUMPY_REQUIRED_FEATURE} (AVX2 and FMA) loops")
    return found


@contextlib.contextmanager
def pinned_blas(threads: int) -> Iterator[BlasState]:
    """OpenBLAS at `threads` threads for the block, every portable setting read back and
    checked: a PipelineError says what is off and how to fix it."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=threads, user_api="blas"):
        state = current_state()
        found = problems(state, threads)
        if found:
            raise PipelineError(
                f"not in the portable training mode: {'; '.join(found)}. It needs an x86-64 "
                "CPU with AVX2 and FMA and a process started with "
                + " ".join(f"{name}='{value}'" for name, value in PORTABLE_ENVIRONMENT.items())
                + " (the train stage and `mnist-pipeline tune` set them themselves); or set "
                "train.framework: keras"
            )
        yield state


def mode_tags(framework: str, threads: int) -> dict[str, str]:
    """The tags naming a run's training mode: the portable one's settings read back under
    pinned_blas for `framework: numpy`, else Keras/XLA (CPU-dependent: see the machine.* tags)."""
    if framework != "numpy":
        return {MODE_TAG: KERAS_MODE}
    with pinned_blas(threads) as state:
        return {
            MODE_TAG: PORTABLE_MODE,
            "portable.kernel": state.kernel,
            "portable.threads": str(state.threads),
            "portable.openblas": state.openblas,
            "portable.numpy_simd": " ".join(state.numpy_simd) or "baseline only",
        }
