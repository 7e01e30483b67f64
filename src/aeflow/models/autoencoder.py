"""The LightningModule that trains an `AutoencoderNet`: a reconstruction loss and an optimizer."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from aeflow.models.choices import LOSSES, SCHEDULER_INTERVALS, noise_problem
from aeflow.models.components import AutoencoderNet
from aeflow.models.finite_loss import FiniteLossCheck

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., torch.optim.lr_scheduler.LRScheduler]


def reconstruction_loss(name: str, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean loss per pixel between sigmoid(logits) and target, both (B, ...) in [0, 1].

    BCE works on the logits (numerically stable log-sigmoid), so the decoder's
    output sigmoid is applied exactly once, inside the loss.
    """
    if name == "mse":
        return F.mse_loss(torch.sigmoid(logits), target)
    if name == "bce":
        return F.binary_cross_entropy_with_logits(logits, target)
    raise ValueError(f"unknown loss {name!r}; allowed: {list(LOSSES)}")


class Autoencoder(pl.LightningModule):
    """Trains an `AutoencoderNet` (`self.net`) to rebuild its input.

    `forward` returns reconstructions in [0, 1]; `encode` returns codes. The
    plain network is what evaluation and serving load (`aeflow.models.weights`).

    Args:
        encoder: The network from images to codes (`model.encoder`).
        decoder: The network from codes to logits (`model.decoder`).
        optimizer: Builds the optimizer from the parameters (the `optimizer:` group, injected).
        latent_dim: Units of the code each image is compressed to; the encoder and decoder read
            theirs from it, and the baselines compare with PCA keeping as many components.
        loss: The reconstruction loss, a mean per pixel: `mse` (squared error of the sigmoid
            outputs) or `bce` (binary cross-entropy on the logits).
        scheduler: Builds the learning-rate schedule from the optimizer (`scheduler.lr_scheduler`,
            injected; None: a constant learning rate).
        scheduler_interval: When the schedule steps: `step` (every optimizer step) or `epoch`
            (`scheduler.interval`, injected).
    """

    # Steps between checks that the loss is finite (FiniteLossCheck); None: every step on
    # the CPU, every 100 on an accelerator, where each check waits for the device.
    finite_check_every_n_steps: int | None = None

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        optimizer: OptimizerFactory,
        latent_dim: int,
        loss: str = "mse",
        scheduler: SchedulerFactory | None = None,
        scheduler_interval: str = "step",
    ) -> None:
        super().__init__()
        # The networks, optimizer and schedule factories are rebuilt from config, not pickled.
        self.save_hyperparameters(ignore=["encoder", "decoder", "optimizer", "scheduler"])
        self.net = AutoencoderNet(encoder, decoder)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        if scheduler_interval not in SCHEDULER_INTERVALS:
            raise ValueError(
                f"scheduler interval {scheduler_interval!r}; allowed: {list(SCHEDULER_INTERVALS)}"
            )
        self.scheduler_interval = scheduler_interval
        self.loss_name = loss
        reconstruction_loss(loss, torch.zeros(1), torch.zeros(1))  # fail fast on a bad name

    @property
    def encoder(self) -> nn.Module:
        return self.net.encoder

    @property
    def decoder(self) -> nn.Module:
        return self.net.decoder

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.encode(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.net.decode(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def corrupt(self, x: torch.Tensor) -> torch.Tensor:
        """The network's training input for clean images `x`: `x` itself here (see DenoisingAutoencoder)."""
        return x

    def _common_step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        x, _ = batch
        # Only training sees corrupted inputs; validation and test score clean reconstructions.
        inputs = self.corrupt(x) if stage == "train" else x
        loss = reconstruction_loss(self.loss_name, self.net.logits(inputs), x)
        # The epoch's value is the batch-size-weighted mean of the batches' losses.
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(x))
        return loss

    def configure_callbacks(self) -> list[pl.Callback]:
        # Part of the model, not of one trainer's set-up: every Trainer that fits it stops on a
        # non-finite loss.
        return [FiniteLossCheck(self.finite_check_every_n_steps)]

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._common_step(batch, "train")

    def validation_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._common_step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._common_step(batch, "test")

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer, **self._schedule_length(self.scheduler_factory))
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": self.scheduler_interval},
        }

    def _schedule_length(self, factory: SchedulerFactory) -> dict[str, int]:
        """The schedule's length, known only once the trainer is attached.

        OneCycleLR's `total_steps` and CosineAnnealingLR's `T_max` count the
        scheduler's steps: optimizer steps for interval "step"
        (`trainer.estimated_stepping_batches`, which accounts for
        limit_train_batches, accumulation and devices), epochs for "epoch".
        """
        if self.scheduler_interval == "step":
            length = int(self.trainer.estimated_stepping_batches)
        else:
            length = int(self.trainer.max_epochs)
        params = inspect.signature(getattr(factory, "func", factory)).parameters
        preset = getattr(factory, "keywords", {})
        return {k: length for k in ("total_steps", "T_max") if k in params and preset.get(k) is None}


class DenoisingAutoencoder(Autoencoder):
    """Learns to rebuild clean images from corrupted ones (Vincent et al., 2008).

    `noise`: "gaussian" adds N(0, noise_level^2) to every pixel and clips to [0, 1];
    "mask" sets each pixel to 0 with probability `noise_level`. The corruption
    is applied in training_step only: `forward`, validation and test see clean
    images, so the evaluate stage scores clean reconstructions.

    Args:
        noise: The corruption of the training inputs: `gaussian` (add N(0, noise_level^2) to every
            pixel, clip to [0, 1]) or `mask` (set each pixel to 0 with probability noise_level).
        noise_level: The Gaussian noise's standard deviation (>= 0) or the masking probability
            (in [0, 1)), on pixels scaled to [0, 1].

    The other arguments are Autoencoder's.
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        optimizer: OptimizerFactory,
        latent_dim: int,
        loss: str = "mse",
        scheduler: SchedulerFactory | None = None,
        scheduler_interval: str = "step",
        noise: str = "gaussian",
        noise_level: float = 0.3,
    ) -> None:
        # Explicit arguments (not *args): the config schema checks keys against this signature.
        super().__init__(encoder, decoder, optimizer, latent_dim, loss, scheduler, scheduler_interval)
        problem = noise_problem(noise, noise_level)
        if problem:
            raise ValueError(problem)
        self.noise, self.noise_level = noise, noise_level

    def corrupt(self, x: torch.Tensor) -> torch.Tensor:
        if self.noise == "gaussian":
            return (x + self.noise_level * torch.randn_like(x)).clamp_(0.0, 1.0)
        keep = torch.rand_like(x) >= self.noise_level
        return x * keep


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
