"""The LightningModule: an encoder, a decoder, a reconstruction loss and an optimizer."""

from __future__ import annotations

from collections.abc import Callable

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from aeflow.errors import TrainingError

OptimizerFactory = Callable[..., torch.optim.Optimizer]


def reconstruction_loss(name: str, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean loss per pixel between sigmoid(logits) and target, both (B, ...) in [0, 1].

    BCE works on the logits (numerically stable log-sigmoid), so the decoder's
    output sigmoid is applied exactly once, inside the loss.
    """
    if name == "mse":
        return F.mse_loss(torch.sigmoid(logits), target)
    if name == "bce":
        return F.binary_cross_entropy_with_logits(logits, target)
    raise ValueError(f"unknown loss {name!r}; allowed: ['mse', 'bce']")


class Autoencoder(pl.LightningModule):
    """Trains `decoder(encoder(x))` to rebuild `x`.

    `forward` returns reconstructions in [0, 1]; `encode` returns codes.
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        optimizer: OptimizerFactory,
        latent_dim: int,
        loss: str = "mse",
    ) -> None:
        super().__init__()
        # The networks and optimizer factory are rebuilt from config, not pickled.
        self.save_hyperparameters(ignore=["encoder", "decoder", "optimizer"])
        self.encoder, self.decoder = encoder, decoder
        self.optimizer_factory = optimizer
        self.loss_name = loss
        reconstruction_loss(loss, torch.zeros(1), torch.zeros(1))  # fail fast on a bad name

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)  # (B, latent_dim)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decoder(z))  # (B, 1, H, W) in [0, 1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    def _common_step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        x, _ = batch
        loss = reconstruction_loss(self.loss_name, self.decoder(self.encoder(x)), x)
        if not torch.isfinite(loss):
            raise TrainingError(
                f"{stage} loss became {loss.item()} at epoch {self.current_epoch}, "
                f"step {self.global_step}: training diverged. Lower optimizer.lr "
                "or enable gradient clipping (trainer.gradient_clip_val)."
            )
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, prog_bar=True,
                 batch_size=len(x))
        return loss

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._common_step(batch, "train")

    def validation_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._common_step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._common_step(batch, "test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(params=self.parameters())


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
