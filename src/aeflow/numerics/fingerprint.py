"""What decides a run's float rounding, recorded on every run.

The parts: the CPU (vendor, model), the kernel family torch dispatches to (ATen's CPU capability),
the BLAS and oneDNN builds and the modes they run in (MKL_CBWR, ONEDNN_MAX_CPU_ISA), torch, CUDA
and cuDNN versions and the GPU where one trains, the thread count, the determinism and precision
switches, and the numerics mode. They become MLflow tags `aeflow.numerics.<part>` plus
`aeflow.numerics.hash`, a short hash of the parts that decide rounding: in portable mode the CPU
model is recorded but not hashed (the pins make it irrelevant), so two machines with equal hashes
are expected to give bit-identical results.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aeflow.numerics.modes import (
    NATIVE,
    PORTABLE,
    NumericsError,
    check_mode,
    is_x86,
    pinned_environment,
    portable_threads,
)

PREFIX = "aeflow.numerics."
HASH_TAG = PREFIX + "hash"
# Recorded, but in portable mode not part of the hash: the pins make the result independent of them.
MACHINE_PARTS = ("cpu.vendor", "cpu.model")
UNSET = "unset"


@dataclass(frozen=True)
class Fingerprint:
    """The parts (name -> value, all strings) and the short hash of those that decide rounding."""

    parts: dict[str, str]

    @property
    def mode(self) -> str:
        return self.parts.get("mode", NATIVE)

    @property
    def hashed(self) -> dict[str, str]:
        skip = MACHINE_PARTS if self.mode == PORTABLE else ()
        return {k: v for k, v in self.parts.items() if k not in skip}

    @property
    def hash(self) -> str:
        text = json.dumps(self.hashed, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def tags(self) -> dict[str, str]:
        """MLflow tags: one per part, and the hash."""
        return {**{PREFIX + k: v for k, v in self.parts.items()}, HASH_TAG: self.hash}

    def as_dict(self) -> dict[str, str]:
        return {**self.parts, "hash": self.hash}

    def describe(self) -> str:
        """One line: the mode, CPU, kernel family and threads, and the hash."""
        p = self.parts
        return (
            f"{p.get('mode')} numerics on {p.get('cpu.model')} (ATen {p.get('aten.capability')}, "
            f"MKL_CBWR {p.get('mkl.cbwr')}, {p.get('threads')} thread(s)) [{self.hash}]"
        )


def from_tags(tags: Mapping[str, str]) -> Fingerprint | None:
    """The fingerprint an MLflow run records, or None for a run made before it was recorded."""
    parts = {k[len(PREFIX) :]: v for k, v in tags.items() if k.startswith(PREFIX) and k != HASH_TAG}
    return Fingerprint(parts) if parts else None


def differences(a: Fingerprint, b: Fingerprint) -> list[tuple[str, str | None, str | None]]:
    """(part, value in a, value in b) for each part that decides rounding and differs."""
    keys = sorted(set(a.hashed) | set(b.hashed))
    return [(k, a.parts.get(k), b.parts.get(k)) for k in keys if a.parts.get(k) != b.parts.get(k)]


# --- what this process runs on -------------------------------------------------------------------


def cpu_identity() -> tuple[str, str]:
    """(vendor, model) of this CPU: /proc/cpuinfo's vendor_id and model name with family and model
    numbers (a VM may show only "AMD EPYC"), else what the platform module says."""
    info = Path("/proc/cpuinfo")
    if info.is_file():
        fields: dict[str, str] = {}
        for line in info.read_text(errors="replace").splitlines():
            if not line.strip():
                break  # the first processor is enough
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
        name = fields.get("model name") or fields.get("Processor") or platform.processor()
        if "cpu family" in fields:
            name = f"{name} (family {fields['cpu family']} model {fields.get('model', '?')})"
        return fields.get("vendor_id") or fields.get("CPU implementer", platform.machine()), name
    return platform.system(), platform.processor() or platform.machine()


def _built_with(pattern: str, text: str) -> str:
    found = re.search(pattern, text)
    return found.group(1).strip() if found else "none"


def collect(
    mode: str,
    *,
    gpu: bool = False,
    deterministic: bool = False,
    precision: str = "32-true",
    matmul_precision: str = "highest",
) -> Fingerprint:
    """The fingerprint of this process as it runs now (torch imported here, if not already)."""
    import torch

    vendor, model = cpu_identity()
    build = torch.__config__.show()
    parts = {
        "mode": check_mode(mode),
        "cpu.vendor": vendor,
        "cpu.model": model,
        "cpu.arch": platform.machine(),
        "aten.capability": torch.backends.cpu.get_cpu_capability(),
        "blas": _built_with(r"(Intel\(R\) oneAPI Math Kernel Library Version [^\n]*?)-Product", build)
        if "Math Kernel Library" in build
        else _built_with(r"BLAS_INFO=([^,\n]*)", build),
        "mkl.cbwr": os.environ.get("MKL_CBWR", UNSET),
        "onednn": _built_with(r"MKL-DNN (v[\d.]+)", build),
        "onednn.max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", UNSET),
        "torch": torch.__version__,
        "threads": str(torch.get_num_threads()),
        "deterministic": str(bool(deterministic or torch.are_deterministic_algorithms_enabled())).lower(),
        "precision": str(precision),
        "matmul_precision": str(matmul_precision),
        "gpu": "none",
    }
    if gpu and torch.cuda.is_available():
        parts.update(
            gpu=torch.cuda.get_device_name(0),
            cuda=str(torch.version.cuda),
            cudnn=str(torch.backends.cudnn.version()),
        )
    return Fingerprint(parts)


def uses_gpu(trainer: Mapping[str, Any]) -> bool:
    import torch

    accelerator = str(trainer.get("accelerator", "cpu"))
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


def fingerprint(cfg: Any) -> Fingerprint:
    """The fingerprint of a run of `cfg` in this process; in portable mode, first checks that the
    pins are in effect (NumericsError naming the fix if not)."""
    perf, trainer = cfg.performance, cfg.trainer
    mode = check_mode(perf.get("numerics", NATIVE))
    found = collect(
        mode,
        gpu=uses_gpu(trainer),
        deterministic=bool(trainer.get("deterministic", False)),
        precision=trainer.get("precision", "32-true"),
        matmul_precision=perf.get("float32_matmul_precision", "highest"),
    )
    if mode == PORTABLE:
        check_pinned(found, perf.get("num_threads"))
    return found


def check_pinned(found: Fingerprint, num_threads: int | None) -> None:
    """NumericsError unless the portable pins are what this process runs with."""
    expected = pinned_environment(PORTABLE, num_threads)
    wrong = {k: os.environ.get(k, UNSET) for k, v in expected.items() if os.environ.get(k) != v}
    if is_x86() and found.parts["aten.capability"] != "AVX2":
        wrong["ATen capability"] = found.parts["aten.capability"]
    if found.parts["threads"] != str(portable_threads(num_threads)):
        wrong["torch threads"] = found.parts["threads"]
    if wrong:
        shown = ", ".join(f"{k}={v}" for k, v in wrong.items())
        raise NumericsError(
            f"performance.numerics=portable is not in effect in this process ({shown}): the pins are "
            "set by each stage before torch is imported; run through `dvc repro` or `aeflow`, or start "
            "Python with " + " ".join(f"{k}={v}" for k, v in expected.items())
        )
