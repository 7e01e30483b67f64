"""Where checkpoints live and how a model is rebuilt from one: weights only, never pickled objects.

Plain torch: the stages that only load a model (evaluate, visualize, the served model) build the
`AutoencoderNet` and need no Lightning.
"""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig

from aeflow.models.components import AutoencoderNet

BEST, LAST = "best", "last"  # ModelCheckpoint file names (best by val/loss, and the latest)
NET_PREFIX = "net."  # the Autoencoder's attribute holding the AutoencoderNet


CONFIG = "config.yaml"  # beside the checkpoints: the resolved config they were trained with


def checkpoint_path(cfg: DictConfig, which: str) -> Path:
    return Path(cfg.paths.checkpoints) / f"{which}.ckpt"


def config_path(cfg: DictConfig) -> Path:
    return Path(cfg.paths.checkpoints) / CONFIG


def network_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A LightningModule checkpoint's state dict with the `AutoencoderNet`'s keys.

    The Autoencoder holds the network as `net` (keys `net.encoder...`); keys without
    that prefix (`encoder...`, a module holding the networks directly) are kept as they are.
    """
    return {key.removeprefix(NET_PREFIX): value for key, value in state.items()}


def build_network(cfg: DictConfig) -> AutoencoderNet:
    """The plain `AutoencoderNet` of `cfg.model` (its encoder's and decoder's `_target_`s), untrained."""
    from hydra.utils import instantiate

    model = cfg.model
    return AutoencoderNet(
        instantiate(model.encoder, _convert_="all"), instantiate(model.decoder, _convert_="all")
    )


def load_weights(cfg: DictConfig, checkpoint: str | Path) -> AutoencoderNet:
    """The network `cfg` describes, with the weights of a Lightning checkpoint, in eval mode."""
    model = build_network(cfg)
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    model.load_state_dict(network_state(state))
    return model.eval()


def is_loadable(path: str | Path) -> bool:
    """Whether `path` is a complete checkpoint that loads weights-only."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 (corrupt, truncated, or holds objects: not resumable)
        return False
    return isinstance(state, dict) and "state_dict" in state
