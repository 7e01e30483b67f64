"""Lightning callbacks of every training run."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
from omegaconf import DictConfig
from pytorch_lightning.callbacks import EarlyStopping

from aeflow.io import write_csv

LOSS_KEYS = ("train/loss", "val/loss")


class LossHistory(pl.Callback):
    """Writes one CSV row per epoch (epoch, train/loss, val/loss): the DVC loss plot.

    The file is rewritten atomically each epoch, so it is complete after a kill.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.rows: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        row = {"epoch": trainer.current_epoch}
        row.update({k: round(float(metrics[k]), 8) for k in LOSS_KEYS if k in metrics})
        self.rows = [r for r in self.rows if r["epoch"] < row["epoch"]] + [row]
        write_csv(self.path, self.rows, fieldnames=["epoch", *LOSS_KEYS])

    def state_dict(self) -> dict:
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: dict) -> None:
        self.rows = list(state_dict.get("rows", []))


def configured_callbacks(cfg: DictConfig) -> list[pl.Callback]:
    """The optional callbacks the `callbacks:` config section switches on.

    Early stopping watches val/loss, the metric the best checkpoint is chosen by,
    so the kept models/best.ckpt is the best epoch whether or not it stops early.
    """
    stop = cfg.callbacks.early_stopping
    if not stop.enabled:
        return []
    return [
        EarlyStopping(
            monitor="val/loss",
            mode="min",
            patience=int(stop.patience),
            min_delta=float(stop.min_delta),
        )
    ]
