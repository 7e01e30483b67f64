"""Where checkpoints live and how they are loaded: weights only, never pickled objects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from omegaconf import DictConfig

from aeflow.config import instantiate_model
from aeflow.io import atomic_path

BEST, LAST = "best", "last"  # ModelCheckpoint file names (best by val/loss, and the latest)


def checkpoint_path(cfg: DictConfig, which: str) -> Path:
    return Path(cfg.paths.checkpoints) / f"{which}.ckpt"


def load_weights(cfg: DictConfig, checkpoint: str | Path) -> torch.nn.Module:
    """The model `cfg` describes, with the weights of a Lightning checkpoint, in eval mode."""
    model = instantiate_model(cfg)
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    model.load_state_dict(state)
    return model.eval()


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint writes as temporary file + fsync + rename.

    Lightning's own writer opens the final path and writes into it, so a kill
    mid-write leaves a truncated `.ckpt`; with this, a checkpoint path holds
    either the previous complete file or the new complete one. Loading is
    weights-only (tensors and plain containers, never arbitrary objects).
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options")
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)

    def load_checkpoint(self, path, map_location: Any | None = None, weights_only: bool | None = None):
        kwargs = {} if map_location is None else {"map_location": map_location}
        return super().load_checkpoint(path, weights_only=True, **kwargs)


def is_loadable(path: str | Path) -> bool:
    """Whether `path` is a complete checkpoint that loads weights-only."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 (corrupt, truncated, or holds objects: not resumable)
        return False
    return isinstance(state, dict) and "state_dict" in state
