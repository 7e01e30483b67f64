"""One trial: compose and validate its config, train it with the project's own training, report to Optuna."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
import optuna
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from aeflow.config.params import CONF_DIR, compose
from aeflow.config.schema import validate
from aeflow.errors import TrainingError
from aeflow.search.space import SearchSpec
from aeflow.search.storage import WORKER_ATTR, Worker
from aeflow.tracking import runs as tracking
from aeflow.training.train import train

log = logging.getLogger(__name__)

RUN_ATTR = "mlflow_run_id"
STATE_TAG = "aeflow.search.state"
# Input paths every trial shares; every other path is the trial's own.
SHARED_PATHS = ("data",)


def trial_folder(study_folder: Path, number: int) -> Path:
    return study_folder / f"trial-{number:04d}"


def trial_config(
    spec: SearchSpec, params: dict[str, Any], folder: Path, conf_dir: str | Path = CONF_DIR
) -> DictConfig:
    """The composed, validated config of one trial; its outputs go under `folder`.

    Checkpoints, metrics, the run id file and the resume folder are the
    trial's own, so trials never overwrite each other or the pipeline's
    `models/`. The model is not logged to MLflow: the best trial's preset is
    retrained through the pipeline, which logs it.
    """
    cfg = compose(spec.overrides(params), conf_dir=conf_dir)
    for name in list(cfg.paths):
        if name not in SHARED_PATHS:
            cfg.paths[name] = str(folder / cfg.paths[name])
    cfg.mlflow.log_model = False
    cfg.mlflow.register_model = None
    validate(cfg)
    return cfg


class ReportToOptuna(pl.Callback):
    """Reports the objective metric after every validation epoch; stops training when Optuna prunes.

    Stopping through `trainer.should_stop` (not by raising) lets training end
    normally: the trial's MLflow run is complete up to the pruned epoch.
    The MLflow run id is stored on the trial as soon as the run exists, so a
    trial interrupted later can still have its run marked FAILED.
    """

    def __init__(self, trial: optuna.Trial, metric: str) -> None:
        self.trial, self.metric = trial, metric
        self.values: list[float] = []
        self.pruned_at: int | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        run_id = getattr(trainer.logger, "run_id", None)
        if trainer.is_global_zero and run_id:
            self.trial.set_user_attr(RUN_ATTR, run_id)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if (
            trainer.sanity_checking
            or not trainer.is_global_zero
            or self.metric not in trainer.callback_metrics
        ):
            return
        epoch = trainer.current_epoch
        self.values.append(float(trainer.callback_metrics[self.metric]))
        self.trial.report(self.values[-1], step=epoch)
        if self.trial.should_prune():
            self.pruned_at = epoch
            trainer.should_stop = True


def make_objective(
    spec: SearchSpec,
    study_folder: Path,
    worker: Worker,
    parent_run_id: str,
    on_started: Callable[[], None],
    conf_dir: str | Path = CONF_DIR,
) -> Callable[[optuna.Trial], float]:
    """The function Optuna calls per trial. `on_started` runs once the trial is tagged with this worker."""

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr(WORKER_ATTR, worker.id)
        on_started()
        params = spec.suggest(trial)
        folder = trial_folder(study_folder, trial.number)
        cfg = trial_config(spec, params, folder, conf_dir)
        log.info("Trial %d: %s", trial.number, " ".join(spec.overrides(params)[len(spec.base) + 1 :]))
        reporter = ReportToOptuna(trial, spec.metric)
        tags = {
            "mlflow.parentRunId": parent_run_id,
            "mlflow.runName": f"{spec.study}-trial-{trial.number}",
            "aeflow.search.study": spec.study,
            "aeflow.search.trial": str(trial.number),
        }
        try:
            result = train(cfg, callbacks=[reporter], tags=tags)
        finally:  # a trial's checkpoints are not kept: the best trial is retrained from its preset
            shutil.rmtree(cfg.paths.checkpoints, ignore_errors=True)
            shutil.rmtree(cfg.paths.resume, ignore_errors=True)
        OmegaConf.save(cfg, folder / "config.yaml")
        client = mlflow.MlflowClient(tracking.store_uri(tracking.tracking_uri(cfg.mlflow.tracking_uri)))
        if reporter.pruned_at is not None:
            tracking.retry_locked(client.set_tag, result.run_id, STATE_TAG, "PRUNED")
            tracking.retry_locked(client.set_terminated, result.run_id, "KILLED")
            raise optuna.TrialPruned(f"{spec.metric} after epoch {reporter.pruned_at}")
        if not reporter.values:
            raise TrainingError(f"training logged no {spec.metric}: no validation epoch ran")
        tracking.retry_locked(client.set_tag, result.run_id, STATE_TAG, "COMPLETE")
        return min(reporter.values) if spec.direction == "minimize" else max(reporter.values)

    return objective
