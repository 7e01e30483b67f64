"""Training: config in, trained checkpoint + MLflow run out."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import MLFlowLogger

from aeflow import distributed, serving, tracking
from aeflow.callbacks import LossHistory
from aeflow.checkpoints import BEST, load_weights
from aeflow.config import instantiate_datamodule, instantiate_model, to_container
from aeflow.io import write_json

log = logging.getLogger(__name__)



@dataclass
class TrainResult:
    run_id: str
    best_checkpoint: Path
    metrics: dict[str, float]


def train(cfg: DictConfig) -> TrainResult:
    """Fit the autoencoder `cfg` describes; log everything to one MLflow run.

    Writes the best/last checkpoints, the run id file, the loss curve and the
    training metrics at the paths in `cfg.paths`.
    """
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate_datamodule(cfg)
    datamodule.setup("fit")  # checksums and split sizes fail here, before any tracking or training
    model = instantiate_model(cfg)

    uri = tracking.tracking_uri(cfg.mlflow.tracking_uri)
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient(uri)
    rank_zero = distributed.is_rank_zero()
    if rank_zero:
        experiment_id = tracking.ensure_experiment(client, cfg.mlflow.experiment_name, uri)
        run = client.create_run(experiment_id, tags=run_tags(cfg))
        run_id = run.info.run_id
        tracking.write_run_info(cfg.paths.run_info, run_id, uri, experiment_id)
        client.log_batch(run_id, params=[
            mlflow.entities.Param(k, str(v)) for k, v in tracking.flatten(to_container(cfg)).items()
        ])
        distributed.share_run_id(run_id)
    else:  # another data-parallel process (DDP): rank zero alone tracks and writes files
        run_id = distributed.shared_run_id()

    checkpoint = ModelCheckpoint(dirpath=cfg.paths.checkpoints, filename=BEST, monitor="val/loss",
                                 mode="min", save_last=True, enable_version_counter=False)
    logger = MLFlowLogger(experiment_name=cfg.mlflow.experiment_name, tracking_uri=uri, run_id=run_id)
    trainer = build_trainer(cfg, callbacks=[checkpoint, LossHistory(cfg.paths.loss_curve)], logger=logger)
    started = time.perf_counter()
    try:
        trainer.fit(model, datamodule=datamodule)
    except BaseException:
        if rank_zero:
            client.set_terminated(run_id, "FAILED")
        raise
    train_time = time.perf_counter() - started
    if not trainer.is_global_zero:
        return TrainResult(run_id=run_id or "", best_checkpoint=Path(checkpoint.best_model_path), metrics={})

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.endswith("/loss")}
    metrics.update(best_val_loss=float(checkpoint.best_model_score), epochs=trainer.current_epoch,
                   train_time_s=round(train_time, 3))
    write_json(cfg.paths.train_metrics, metrics)
    best = Path(checkpoint.best_model_path)

    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics({"best_val_loss": metrics["best_val_loss"], "train_time_s": train_time})
        if cfg.mlflow.log_model:
            log_best_model(cfg, best, datamodule)
    return TrainResult(run_id=run_id, best_checkpoint=best, metrics=metrics)


def build_trainer(cfg: DictConfig, callbacks: list[pl.Callback], logger) -> pl.Trainer:
    """The Trainer `cfg.trainer` describes (also used by benchmarks/bench.py)."""
    return instantiate(cfg.trainer, callbacks=callbacks, logger=logger, _convert_="all")


def run_tags(cfg: DictConfig) -> dict[str, str]:
    import os

    tags = {
        "git_commit": tracking.git_commit(),
        "git_dirty": str(tracking.git_dirty()).lower(),
        "data_dvc_md5": tracking.dvc_data_hash(cfg.paths.data),
        "dataset": cfg.data.name,
    }
    # Set by `dvc exp run`: lines the MLflow run up with its DVC experiment.
    for env, tag in (("DVC_EXP_NAME", "dvc_exp_name"), ("DVC_EXP_BASELINE_REV", "dvc_baseline_rev")):
        if os.environ.get(env):
            tags[tag] = os.environ[env]
    return tags


def log_best_model(cfg: DictConfig, best: Path, datamodule: pl.LightningDataModule) -> None:
    model = load_weights(cfg, best)
    weights = best.with_suffix(".weights.pt")
    torch.save(model.state_dict(), weights)
    config_file = Path(cfg.paths.checkpoints) / "config.yaml"
    config_file.write_text(OmegaConf.to_yaml(cfg))
    images, _ = datamodule.splits["val"]
    example = (images[:4].reshape(4, -1).float() / 255.0).cpu().numpy()
    serving.log_model(model, config_file, weights, example)
