"""Training: config in, trained checkpoint + MLflow run out."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint, Timer

from aeflow.config.instantiate import instantiate_datamodule, instantiate_model
from aeflow.config.params import to_container
from aeflow.errors import TrackingError, TrainingError
from aeflow.io import copy_file, write_json, write_text
from aeflow.models.weights import BEST, LAST, checkpoint_path, config_path
from aeflow.numerics.fingerprint import fingerprint as numerics_fingerprint
from aeflow.tracking import lineage
from aeflow.tracking import runs as tracking
from aeflow.tracking import system as system_metrics
from aeflow.training import distributed, performance
from aeflow.training.callbacks import LossHistory, configured_callbacks
from aeflow.training.checkpoints import AtomicCheckpointIO
from aeflow.training.recovery import ResumeDir, TolerantMLFlowLogger, checkpoint_epochs, describe_failure

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    run_id: str
    best_checkpoint: Path
    metrics: dict[str, float]


def train(
    cfg: DictConfig, callbacks: Sequence[pl.Callback] = (), tags: Mapping[str, str] | None = None
) -> TrainResult:
    """Fit the autoencoder `cfg` describes; log everything to one MLflow run.

    `tags` are added to a newly created run (e.g. `mlflow.parentRunId` to nest it
    under a hyperparameter search's run).

    Writes the best/last checkpoints, the run id file, the loss curve and the
    training metrics at the paths in `cfg.paths`. An interrupted run (killed,
    or the tracking store gone) resumes: see `aeflow.training.recovery`.
    """
    uri = tracking.store_uri(tracking.tracking_uri(cfg.mlflow.tracking_uri))
    tracking.preflight(uri)  # seconds, naming the URI, before any data is read or a run is created
    pl.seed_everything(cfg.seed, workers=True)
    # What decides float rounding here (refuses portable mode if its pins are not in effect).
    tags = {**numerics_fingerprint(cfg).tags(), **(tags or {})}
    datamodule = instantiate_datamodule(cfg)
    datamodule.setup("fit")  # checksums and split sizes fail here, before any tracking or training
    model = performance.compile_model(cfg, instantiate_model(cfg))

    resume = ResumeDir.for_config(cfg)
    ckpt_path = resume.checkpoint()
    mlflow.set_tracking_uri(uri)
    with tracking.store_lock(uri):  # the client creates a new SQLite store: parallel experiments race
        client = mlflow.MlflowClient(uri)
    rank_zero = distributed.is_rank_zero()
    with resume.held(enabled=rank_zero):
        if rank_zero:
            run_id = open_run(client, cfg, uri, resume, ckpt_path, tags)
            lineage.record_inputs(client, run_id, cfg, datamodule.splits)
            distributed.share_run_id(run_id)
        else:  # another data-parallel process (DDP): rank zero alone tracks and writes files
            run_id = distributed.shared_run_id()
        logger = TolerantMLFlowLogger(
            experiment_name=cfg.mlflow.experiment_name, tracking_uri=uri, run_id=run_id
        )
        with system_metrics.logged(run_id if rank_zero else None, uri):  # CPU, memory, GPU while fitting
            fitted = fit(
                cfg,
                model,
                datamodule,
                resume,
                ckpt_path,
                logger,
                callbacks,
                on_failure=(lambda: mark_failed(client, run_id)) if rank_zero else None,
            )
        if not fitted.trainer.is_global_zero:
            return TrainResult(run_id=run_id or "", best_checkpoint=fitted.best_model_path, metrics={})
        if fitted.cut_short:
            refuse_cut_short(cfg, client, run_id, fitted.trainer, resume)
        best, metrics = publish(cfg, fitted, resume)
        log_results(run_id, metrics, logger)
        if logger.failure is not None:  # the checkpoints stay: the next run resumes after the last epoch
            raise TrackingError(
                f"Training finished but logging to the MLflow store {tracking.redact_uri(uri)} failed "
                f"({describe_failure(logger.failure)}). Nothing trained is lost: the checkpoints are in "
                f"{cfg.paths.checkpoints}/ and {resume.path}/; once the store is back, `dvc repro` "
                "resumes from the last checkpoint and finishes logging to the same run."
            )
        resume.discard()  # finished: this checkpoint must never be resumed
    return TrainResult(run_id=run_id, best_checkpoint=best, metrics=metrics)


@dataclass
class Fitted:
    trainer: pl.Trainer
    best_model_path: Path
    best_model_score: float
    history: LossHistory
    train_time_s: float
    cut_short: bool


def fit(
    cfg: DictConfig,
    model: pl.LightningModule,
    datamodule: pl.LightningDataModule,
    resume: ResumeDir,
    ckpt_path: Path | None,
    logger: TolerantMLFlowLogger,
    callbacks: Sequence[pl.Callback],
    on_failure: Callable[[], None] | None,
) -> Fitted:
    """Run the Trainer; checkpoints go to the resume folder (DVC deletes paths.checkpoints before a
    re-run) and are published by `publish` once training has finished."""
    checkpoint = ModelCheckpoint(
        dirpath=resume.path, filename=BEST, monitor="val/loss", mode="min", enable_version_counter=False
    )
    # Every epoch's end (Lightning's save_last only saves when the best improved); after
    # `checkpoint` in the list, so it holds the best-so-far state of this same epoch.
    latest = ModelCheckpoint(
        dirpath=resume.path,
        filename=LAST,
        monitor=None,
        save_top_k=1,
        every_n_epochs=1,
        enable_version_counter=False,
    )
    history = LossHistory(cfg.paths.loss_curve)
    trainer = build_trainer(
        cfg,
        callbacks=[checkpoint, latest, history, *configured_callbacks(cfg), *callbacks],
        logger=logger,
        plugins=[AtomicCheckpointIO()],
    )
    started = time.perf_counter()
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    except TrainingError:
        if on_failure is not None:
            on_failure()
            resume.discard()  # diverged: resuming would diverge again
        raise
    except BaseException as exc:
        if on_failure is not None:
            on_failure()
            log.error(
                "Training stopped (%s); the next run with this config resumes from %s",
                type(exc).__name__,
                resume.path,
            )
        raise
    train_time = time.perf_counter() - started
    cut_short = stopped_by_max_time(trainer)
    score = checkpoint.best_model_score
    return Fitted(
        trainer=trainer,
        best_model_path=Path(checkpoint.best_model_path),
        best_model_score=float(score) if score is not None else float("nan"),
        history=history,
        train_time_s=train_time,
        cut_short=cut_short,
    )


def publish(cfg: DictConfig, fitted: Fitted, resume: ResumeDir) -> tuple[Path, dict[str, float]]:
    """Copy the checkpoints (atomically) where DVC caches them; write the training metrics and the
    config."""
    best, last = checkpoint_path(cfg, BEST), checkpoint_path(cfg, LAST)
    copy_file(fitted.best_model_path, best)
    copy_file(resume.last, last)
    trainer = fitted.trainer
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.endswith("/loss")}
    if fitted.history.rows:  # a run resumed after its last epoch has no callback metrics
        metrics = {**{k: v for k, v in fitted.history.rows[-1].items() if k != "epoch"}, **metrics}
    metrics.update(
        best_val_loss=fitted.best_model_score,
        epochs=trainer.current_epoch,
        train_time_s=round(fitted.train_time_s, 3),
    )
    # The run id beside the metrics: `dvc exp show` lists it, so an experiment is found in MLflow.
    run_id = tracking.read_run_info(cfg.paths.run_info)["run_id"]
    numerics = numerics_fingerprint(cfg).as_dict()
    write_json(cfg.paths.train_metrics, {**metrics, "mlflow_run_id": run_id, "numerics": numerics})
    write_config(cfg)
    return best, metrics


def write_config(cfg: DictConfig) -> None:
    """The resolved config beside the checkpoints, as the package stage serves the model with it:
    a file others read, so the tracking URI is written without credentials."""
    logged = OmegaConf.create(to_container(cfg))
    if cfg.mlflow.tracking_uri:
        logged.mlflow.tracking_uri = tracking.redact_uri(str(cfg.mlflow.tracking_uri))
    write_text(config_path(cfg), OmegaConf.to_yaml(logged))


def log_results(
    run_id: str,
    metrics: dict[str, float],
    logger: TolerantMLFlowLogger,
) -> None:
    """Training's summary metrics, to the run; a failure is kept on `logger.failure`. (The model
    itself is logged by the package stage, aeflow.serving.package.)"""
    try:
        with mlflow.start_run(run_id=run_id):
            mlflow.log_metrics(
                {"best_val_loss": metrics["best_val_loss"], "train_time_s": metrics["train_time_s"]}
            )
    except Exception as exc:  # noqa: BLE001 (reported by the caller with what was kept)
        logger.failure = logger.failure or exc


def open_run(
    client: mlflow.MlflowClient,
    cfg: DictConfig,
    uri: str,
    resume: ResumeDir,
    ckpt_path: Path | None,
    extra_tags: Mapping[str, str] | None = None,
) -> str:
    """The MLflow run this training logs to: the interrupted run it resumes, or a new one
    (tagged with `run_tags` and `extra_tags`).

    A resumed run gets the tags `aeflow.resume_count` and `aeflow.resumed_after_epoch`;
    if the interrupted run is not in this store or was deleted from it, a new run
    links to it with `aeflow.resumed_from_run`.
    """
    with tracking.store_lock(uri):
        experiment_id = tracking.ensure_experiment(client, cfg.mlflow.experiment_name, uri)
    state = resume.state()
    previous = state.get("run_id")
    epochs_done = checkpoint_epochs(ckpt_path) if ckpt_path else 0
    run_id = None
    if previous:
        try:
            found = tracking.retry_locked(client.get_run, previous).info
        except Exception as exc:  # noqa: BLE001 (not in this store: start a new, linked run)
            log.warning("Interrupted run %s not found in %s (%s)", previous, tracking.redact_uri(uri), exc)
        else:  # a deleted run takes no more logging: start a new, linked run
            if found.lifecycle_stage == "deleted":
                log.warning("Interrupted run %s was deleted from %s", previous, tracking.redact_uri(uri))
            else:
                run_id = found.run_id
    resume_tags = {}
    if previous:
        resume_tags = {
            "aeflow.resume_count": str(int(state.get("resume_count", 0)) + 1),
            "aeflow.resumed_after_epoch": str(epochs_done),
        }
    if run_id:
        log.warning(
            "Resuming interrupted MLflow run %s after epoch %d from %s",
            run_id,
            epochs_done,
            ckpt_path or "the start (no complete epoch)",
        )
        tracking.retry_locked(client.update_run, run_id, status="RUNNING")
        for key, value in resume_tags.items():
            tracking.retry_locked(client.set_tag, run_id, key, value)
    else:
        tags = {**run_tags(cfg), **(extra_tags or {})}
        if previous:
            tags.update(resume_tags, **{"aeflow.resumed_from_run": previous})
            log.warning("Resuming training of run %s after epoch %d in a new run", previous, epochs_done)
        run_id = tracking.retry_locked(client.create_run, experiment_id, tags=tags).info.run_id
        params = tracking.flatten(to_container(cfg))
        params["mlflow.tracking_uri"] = tracking.redact_uri(str(params.get("mlflow.tracking_uri")))
        params = [mlflow.entities.Param(k, str(v)) for k, v in params.items()]
        for i in range(0, len(params), 100):
            tracking.retry_locked(client.log_batch, run_id, params=params[i : i + 100])
    resume.write_state(
        run_id=run_id,
        tracking_uri=tracking.redact_uri(uri),
        resume_count=int(state.get("resume_count", -1)) + 1,
    )
    tracking.write_run_info(cfg.paths.run_info, run_id, uri, experiment_id)
    return run_id


def stopped_by_max_time(trainer: pl.Trainer) -> bool:
    """Whether Lightning's Timer (`trainer.max_time`) ended training before `max_epochs`."""
    timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
    if timer is None or trainer.current_epoch >= trainer.max_epochs:
        return False
    remaining = timer.time_remaining("train")
    return remaining is not None and remaining <= 0


def refuse_cut_short(
    cfg: DictConfig, client: mlflow.MlflowClient, run_id: str, trainer: pl.Trainer, resume: ResumeDir
) -> None:
    """Fail the stage for a run that `trainer.max_time` stopped before `max_epochs`: its schedule was
    cut short, so its model depends on the machine's speed and must not pass for the config's result.
    The run is tagged and marked FAILED; the checkpoints stay in the resume folder."""
    try:
        client.set_tag(run_id, "aeflow.stopped_by", "max_time")
    except Exception as exc:  # noqa: BLE001 (the store may be what failed; the stop matters)
        log.error("Could not tag MLflow run %s: %s", run_id, exc)
    mark_failed(client, run_id)
    raise TrainingError(
        f"trainer.max_time ({cfg.trainer.max_time}) stopped training after {trainer.current_epoch} of "
        f"{trainer.max_epochs} epochs: the learning-rate schedule was cut short, so this model is not "
        f"what the config gives, and the pipeline stops here (MLflow run {run_id} marked FAILED, tagged "
        f"aeflow.stopped_by=max_time; checkpoints kept in {resume.path}/). On this machine, lower "
        "trainer.max_epochs (e.g. `dvc exp run -S trainer.max_epochs=50`), or raise the limit "
        "(`-S trainer.max_time=null` removes it)."
    )


def mark_failed(client: mlflow.MlflowClient, run_id: str) -> None:
    try:
        client.set_terminated(run_id, "FAILED")
    except Exception as exc:  # noqa: BLE001 (the store may be what failed; the original error matters)
        log.error("Could not mark MLflow run %s FAILED: %s", run_id, exc)


def build_trainer(cfg: DictConfig, callbacks: list[pl.Callback], logger, **kwargs: Any) -> pl.Trainer:
    """The Trainer `cfg.trainer` describes, with the `performance:` switches applied."""
    return performance.build_trainer(cfg, callbacks, logger, **kwargs)


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
    tags.update(lineage.source_tags(tags.get("dvc_baseline_rev", tags["git_commit"])))
    return tags
