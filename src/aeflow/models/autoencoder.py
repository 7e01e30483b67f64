"""The LightningModule that trains an `AutoencoderNet`: a reconstruction loss and an optimizer."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from aeflow.models.choices import NOISES
from aeflow.models.components import AutoencoderNet
from aeflow.training.callbacks import FiniteLossCheck

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., torch.optim.lr_scheduler.LRScheduler]
SCHEDULER_INTERVALS = ("step", "epoch")


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
    """Trains an `AutoencoderNet` (`self.net`) to rebuild its input.

    `forward` returns reconstructions in [0, 1]; `encode` returns codes. The
    plain network is what evaluation and serving load (`aeflow.models.weights`).
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
        # train/loss of the running epoch: the batch-size-weighted sum, kept on the loss's device.
        self._train_loss_sum: torch.Tensor | None = None
        self._train_loss_count = 0

    # Set on every step: Lightning sets `_current_fx_name` around each hook it calls (about
    # 45 times a step), and the train/loss sum. They hold plain values (never parameters,
    # buffers or modules), so they skip nn.Module.__setattr__'s type checks: 1.4 instead of
    # 9 us a call, measured on the project's CPU.
    _PLAIN_ATTRIBUTES = frozenset({"_current_fx_name", "_train_loss_sum", "_train_loss_count"})

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self._PLAIN_ATTRIBUTES:
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

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
        if stage == "train":
            self._add_train_loss(loss, len(x))
        else:
            self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(x))
        return loss

    def _add_train_loss(self, loss: torch.Tensor, batch_size: int) -> None:
        """Log train/loss: the epoch's batch-size-weighted mean, as `self.log(on_epoch=True)` gives.

        The sum is kept on the loss's device and handed to `self.log` once, at
        the epoch's last batch: Lightning's per-call bookkeeping (about 1-2 ms a
        call in Lightning 2.6) would otherwise cost more than a whole step of
        the tutorial model on a GPU. Logged at the last batch, not at epoch end,
        so callbacks' on_train_epoch_end (the loss curve) see this epoch's value.
        """
        weighted = loss.detach().float() * batch_size
        total = self._train_loss_sum
        self._train_loss_sum = weighted if total is None else total.add_(weighted)
        self._train_loss_count += batch_size
        if self._trainer is not None and self.trainer.is_last_batch:
            self._log_train_loss()

    def _log_train_loss(self) -> None:
        total, count = self._train_loss_sum, self._train_loss_count
        self._train_loss_sum, self._train_loss_count = None, 0
        if total is not None and count:
            self.log(
                "train/loss", total / count, on_step=False, on_epoch=True, prog_bar=True, batch_size=count
            )

    def on_train_epoch_start(self) -> None:
        self._train_loss_sum, self._train_loss_count = None, 0

    def on_train_epoch_end(self) -> None:
        self._log_train_loss()  # only if the last batch was not recognised as such

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
        if noise not in NOISES:
            raise ValueError(f"unknown noise {noise!r}; allowed: {list(NOISES)}")
        if not 0 <= noise_level or (noise == "mask" and noise_level >= 1):
            raise ValueError(f"noise_level={noise_level}: must be >= 0 (and < 1 for mask)")
        self.noise, self.noise_level = noise, noise_level

    def corrupt(self, x: torch.Tensor) -> torch.Tensor:
        if self.noise == "gaussian":
            return (x + self.noise_level * torch.randn_like(x)).clamp_(0.0, 1.0)
        keep = torch.rand_like(x) >= self.noise_level
        return x * keep


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
