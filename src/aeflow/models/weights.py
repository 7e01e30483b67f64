"""Where checkpoints live and how a model is rebuilt from one: weights only, never pickled objects.

Plain torch: the stages that only load a model (evaluate, visualize, the served model) need no Lightning.
"""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig

from aeflow.config.instantiate import instantiate_model

BEST, LAST = "best", "last"  # ModelCheckpoint file names (best by val/loss, and the latest)


def checkpoint_path(cfg: DictConfig, which: str) -> Path:
    return Path(cfg.paths.checkpoints) / f"{which}.ckpt"


def load_weights(cfg: DictConfig, checkpoint: str | Path) -> torch.nn.Module:
    """The model `cfg` describes, with the weights of a Lightning checkpoint, in eval mode."""
    model = instantiate_model(cfg)
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    model.load_state_dict(state)
    return model.eval()


def is_loadable(path: str | Path) -> bool:
    """Whether `path` is a complete checkpoint that loads weights-only."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 (corrupt, truncated, or holds objects: not resumable)
        return False
    return isinstance(state, dict) and "state_dict" in state
