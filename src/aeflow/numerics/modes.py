"""`performance.numerics`: `native` (each library picks its fastest kernels for this CPU) or `portable`
(every kernel choice the CPU path makes is pinned, so the same config and seed give bit-identical
weights on any x86-64 CPU with AVX2, Intel or AMD).

The pins are the libraries' own switches, read from the environment when each library starts, so
they are set before torch is imported (`apply`, called by every stage's entry point and by the
search worker) and reach every process started from there: DataLoader workers, DDP ranks, the
`aeflow reproduce` worktree. This module imports neither torch nor numpy.
"""

from __future__ import annotations

import logging
import os
import platform
import sys
from collections.abc import MutableMapping
from pathlib import Path

import yaml

from aeflow.errors import AeflowError

log = logging.getLogger(__name__)

NATIVE, PORTABLE = "native", "portable"
MODES = (NATIVE, PORTABLE)

# Measured on AMD Zen 4 with the kernel families that CPU can emulate (benchmarks/numerics.py):
# - ATen's vectorised kernels follow the CPU capability (DEFAULT/AVX2/AVX512 round differently):
#   AVX2 is the widest every target CPU has.
# - MKL's CNR branches other than AUTO and COMPATIBLE exist on Intel CPUs only (MKL_CBWR=AVX2 on AMD
#   runs the AUTO branch: MKL_VERBOSE shows CNR:AUTO), so COMPATIBLE is the one branch that is the
#   same code on Intel and AMD. CNR holds at a fixed thread count with dynamic threading off.
# - oneDNN (convolutions) takes its ISA cap from ONEDNN_MAX_CPU_ISA.
# - The thread count splits reductions (ATen's and MKL's): it is pinned too.
X86_PINS = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "COMPATIBLE",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
}
DYNAMIC_OFF = {"MKL_DYNAMIC": "FALSE", "OMP_DYNAMIC": "FALSE"}
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
# A portable run with performance.num_threads=null: one thread, the count every machine has.
PORTABLE_THREADS = 1


class NumericsError(AeflowError):
    """The numerics mode asked for cannot be put in effect in this process."""


def is_x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64", "i686", "x86")


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise NumericsError(f"performance.numerics={mode!r}: allowed: {', '.join(MODES)}")
    return mode


def portable_threads(num_threads: int | None) -> int:
    return int(num_threads) if num_threads else PORTABLE_THREADS


def pinned_environment(mode: str, num_threads: int | None) -> dict[str, str]:
    """The environment variables `mode` sets (none for native, which leaves the environment's choice)."""
    if check_mode(mode) == NATIVE:
        return {}
    threads = str(portable_threads(num_threads))
    return {**(X86_PINS if is_x86() else {}), **DYNAMIC_OFF, **dict.fromkeys(THREAD_VARS, threads)}


def apply(
    mode: str, num_threads: int | None, environ: MutableMapping[str, str] | None = None
) -> dict[str, str]:
    """Put `mode`'s pins in the environment (of this process and every process it starts).

    Refuses once torch is imported with other settings: the libraries read them when they start,
    so a later change would be recorded but not in effect. Returns the variables set.
    """
    environ = os.environ if environ is None else environ
    pins = pinned_environment(mode, num_threads)
    changed = {k: v for k, v in pins.items() if environ.get(k) != v}
    if changed and "torch" in sys.modules and environ is os.environ:
        shown = " ".join(f"{k}={v}" for k, v in pins.items())
        raise NumericsError(
            f"performance.numerics={mode} must be set before torch is imported, and torch is already "
            f"imported in this process: run it through a stage (`dvc repro`) or `aeflow`, or start the "
            f"process with {shown}"
        )
    environ.update(pins)
    if changed:
        log.debug("numerics %s: %s", mode, changed)
    return pins


def from_params(path: str | Path = "params.yaml") -> tuple[str, int | None]:
    """(performance.numerics, performance.num_threads) of a params file, read without torch;
    (native, None) for a params file that has no such keys."""
    path = Path(path)
    if not path.is_file():
        return NATIVE, None
    performance = (yaml.safe_load(path.read_text()) or {}).get("performance") or {}
    return performance.get("numerics", NATIVE), performance.get("num_threads")


def apply_from_params(path: str | Path = "params.yaml") -> dict[str, str]:
    """`apply` with the mode and thread count of params.yaml (each stage's entry point)."""
    return apply(*from_params(path))
