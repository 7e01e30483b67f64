"""Speed switches from the `performance:` config section (README "Performance").

None of them changes what is computed on the CPU with the defaults; each is a
plain config key, so a run's speed settings are recorded with its params.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

log = logging.getLogger(__name__)

MATMUL_PRECISIONS = ("highest", "high", "medium")
DEFAULTS: dict[str, Any] = {
    # "highest": true fp32 matrix products; "high": TF32 on Ampere and later GPUs
    # (about 8x the fp32 rate, ~1e-3 relative error); "medium": bf16 products.
    "float32_matmul_precision": "highest",
    # torch.compile the encoder and decoder in place (checkpoint keys unchanged).
    "compile": False,
    # Redraw the progress bar every N training batches (Lightning's default
    # redraws after every batch, a visible cost for small models).
    "progress_bar_refresh_rate": 20,
    # CPU threads for torch; None: torch's default (one per core).
    "num_threads": None,
}


def settings(cfg: DictConfig) -> dict[str, Any]:
    """The `performance:` section merged over the defaults (the section is optional)."""
    section = cfg.get("performance") or {}
    return {**DEFAULTS, **{k: section[k] for k in section}}


def configure_torch(cfg: DictConfig) -> None:
    """Process-wide switches: the float32 matmul precision (TF32 on GPUs), CPU threads."""
    precision = settings(cfg)["float32_matmul_precision"]
    threads = settings(cfg)["num_threads"]
    if threads:
        torch.set_num_threads(int(threads))
    torch.set_float32_matmul_precision(precision)
    # cuDNN's TF32 switch follows the matmul one (no convolutions here today).
    torch.backends.cudnn.allow_tf32 = precision != "highest"


def compile_model(cfg: DictConfig, model: torch.nn.Module) -> torch.nn.Module:
    """Compile the networks in place when `performance.compile` is set; returns `model`."""
    if settings(cfg)["compile"]:
        for name in ("encoder", "decoder"):
            getattr(model, name).compile()  # nn.Module.compile: state_dict keys are unchanged
        log.info("performance.compile: encoder and decoder compiled with torch.compile")
    return model


def progress_bar(cfg: DictConfig):
    """A progress bar that redraws every `progress_bar_refresh_rate` batches, or None if disabled."""
    if not cfg.trainer.get("enable_progress_bar", True):
        return None
    from pytorch_lightning.callbacks import TQDMProgressBar

    return TQDMProgressBar(refresh_rate=int(settings(cfg)["progress_bar_refresh_rate"]))


def build_trainer(cfg: DictConfig, callbacks: list, logger, **kwargs: Any):
    """The Trainer `cfg.trainer` describes, with these switches applied (training and benchmarks/bench.py)."""
    configure_torch(cfg)
    bar = progress_bar(cfg)
    callbacks = [*callbacks, *([bar] if bar is not None else [])]
    return instantiate(cfg.trainer, callbacks=callbacks, logger=logger, _convert_="all", **kwargs)
