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


def settings(cfg: DictConfig) -> dict[str, Any]:
    """The `performance:` section (its values live in conf/config.yaml; the schema requires each one)."""
    return dict(cfg.performance)


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
