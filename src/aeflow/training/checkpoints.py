"""Lightning checkpoint writes that are atomic, and loads that are weights-only."""

from __future__ import annotations

from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from aeflow.io import atomic_path


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
