"""The portable training mode's process settings: what makes NumPy training give bit-identical
weights on any x86-64 CPU with AVX2 and FMA (docs/reproducibility.md).

OPENBLAS_CORETYPE=Haswell pins OpenBLAS's kernel (it otherwise picks one per CPU, each summing
in its own order); NPY_DISABLE_CPU_FEATURES turns off NumPy's AVX-512 loops; the thread count
(`train.threads`) is set through threadpoolctl. Both libraries read the variables when they load,
so `restart_pinned()` re-executes the process with them; `pinned_blas()` reads every setting back.
"""

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
X86_64_MACHINES = ("x86_64", "amd64")
# NumPy 2.4's dispatch targets above X86_V3 (AVX2, FMA3...): `np.show_runtime()` lists them.
# Naming one the CPU lacks is no error, so the same value serves every CPU.
NUMPY_DISABLED_FEATURES = ("X86_V4", "AVX512_ICL", "AVX512_SPR")
NUMPY_REQUIRED_FEATURE = "X86_V3"
PORTABLE_ENVIRONMENT = {
    "OPENBLAS_CORETYPE": PORTABLE_KERNEL,
    "NPY_DISABLE_CPU_FEATURES": " ".join(NUMPY_DISABLED_FEATURES),
}
# The tags a run records (tracking/provenance.py logs them with the machine's).


def missing_settings(environ: Mapping[str, str]) -> dict[str, str]:
    """The PORTABLE_ENVIRONMENT variables environ lacks or sets otherwise."""
    return {
        name: value for name, value in PORTABLE_ENVIRONMENT.items() if environ.get(name) != value
    }


def restart_pinned() -> None:
    """Re-executes this process (same interpreter, argv and process id) with
    PORTABLE_ENVIRONMENT when it lacks it. Call it first thing in an entry point."""
    missing = missing_settings(os.environ)
    # Only x86-64 has the Haswell kernel; elsewhere a numpy-framework run is refused by
    # pinned_blas with its reason, and the Keras path runs as it always did.
    if not missing or platform.machine().lower() not in X86_64_MACHINES:
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

    def tags(self) -> dict[str, str]:
        return {
            MODE_TAG: PORTABLE_MODE,
            "portable.kernel": self.kernel,
            "portable.threads": str(self.threads),
            "portable.openblas": self.openblas,
            "portable.numpy_simd": " ".join(self.numpy_simd) or "baseline only",
        }


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
    numpy_blas = next((info for info in blas if "numpy" in info["filepath"]), blas[0])
    found = np.show_config(mode="dicts").get("SIMD Extensions", {}).get("found", [])
    return BlasState(
        kernel=str(numpy_blas.get("architecture")),
        threads=int(numpy_blas["num_threads"]),
        openblas=str(numpy_blas.get("version")),
        numpy_simd=tuple(found),
    )


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
    """The tags naming a run's training mode: for `framework: numpy` the portable mode, its
    settings read back under pinned_blas (a PipelineError where they are off); otherwise
    Keras/XLA, whose weights depend on the CPU (see the machine.* tags)."""
    if framework != "numpy":
        return {MODE_TAG: KERAS_MODE}
    with pinned_blas(threads) as state:
        return state.tags()
