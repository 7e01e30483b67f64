"""The check every Trainer that fits an Autoencoder runs: training stops at the first non-finite loss."""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl
import torch

from aeflow.errors import TrainingError


class FiniteLossCheck(pl.Callback):
    """Stops training with an error naming the epoch and step where the loss stopped being finite.

    On the CPU every step is checked at once (free: no device to wait for). On
    an accelerator a per-step check would make the host wait for the device
    every step, so losses are kept on the device and checked together every
    `every_n_steps` steps and at each epoch's end: training stops at most that
    many steps late, still naming the first bad step. The Autoencoder adds this
    callback itself (`configure_callbacks`), so every Trainer that fits it checks.
    """

    def __init__(self, every_n_steps: int | None = None) -> None:
        self.every_n_steps = every_n_steps  # None: 1 on the CPU, 100 elsewhere
        self.pending: list[tuple[torch.Tensor, str, int, int]] = []  # (loss, stage, epoch, step)

    def _add(self, trainer: pl.Trainer, loss: Any, stage: str) -> None:
        if not isinstance(loss, torch.Tensor):
            return
        every = self.every_n_steps or (1 if loss.device.type == "cpu" else 100)
        if every == 1 and not self.pending and math.isfinite(loss.item()):
            return  # the common case on the CPU: one read, no allocation
        self.pending.append((loss.detach(), stage, trainer.current_epoch, trainer.global_step))
        if len(self.pending) >= every:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        pending, self.pending = self.pending, []
        losses = torch.stack([p[0].float() for p in pending])
        finite = torch.isfinite(losses)
        if bool(finite.all()):  # one host-device sync for the whole window
            return
        first = int((~finite).nonzero()[0, 0])
        _, stage, epoch, step = pending[first]
        raise TrainingError(
            f"{stage} loss became {losses[first].item()} at epoch {epoch}, step {step}: training "
            "diverged. Lower optimizer.lr or enable gradient clipping (trainer.gradient_clip_val)."
        )

    # Training losses are checked before their backward pass, so a bad step stops training
    # before any other callback sees its end.
    def on_before_backward(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor
    ) -> None:
        self._add(trainer, loss, "train")

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        self._add(trainer, outputs, "val")

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._add(trainer, outputs, "test")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.flush()

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.flush()  # before ModelCheckpoint saves (on_validation_end)

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.flush()
