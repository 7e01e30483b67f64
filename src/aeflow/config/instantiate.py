"""Building the data module and the model from the validated config (Hydra `_target_`s)."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf


def instantiate_datamodule(cfg: DictConfig, **kwargs: Any):
    from hydra.utils import instantiate

    node = OmegaConf.masked_copy(cfg.data, [k for k in cfg.data if k != "source"])
    return instantiate(node, data_dir=cfg.paths.data, seed=cfg.seed, _convert_="all", **kwargs)


def instantiate_network(cfg: DictConfig):
    """The plain `AutoencoderNet` of `cfg.model` (no Lightning): what evaluation and serving load."""
    from aeflow.models.weights import build_network

    return build_network(cfg)


def instantiate_model(cfg: DictConfig):
    """The LightningModule of `cfg.model` with its optimizer (and schedule): what training fits."""
    from hydra.utils import instantiate

    # `scheduler` is optional (configs written before it existed have none).
    schedule = cfg.get("scheduler") or {}
    factory = schedule.get("lr_scheduler")
    extra = {}
    if factory is not None:
        extra = {"scheduler": instantiate(factory), "scheduler_interval": schedule.get("interval", "step")}
    return instantiate(cfg.model, optimizer=instantiate(cfg.optimizer), _convert_="all", **extra)
