"""Killed training resumes from its last checkpoint, in the same MLflow run, and loses nothing.

The slow tests SIGKILL (no chance to clean up) or SIGTERM (Lightning stops at
the next batch) the real train stage under `dvc repro` mid-epoch and re-run
`dvc repro`. The in-process tests crash a run mid-epoch (an exception
from a callback) and check that the resumed run ends with exactly the weights
of an uninterrupted one, that stale checkpoints are never resumed, that a
second process training the same config is refused, and that a resume whose
MLflow run is gone trains on in a new run linked to it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import psutil
import pytest
import pytorch_lightning as pl
import torch

from aeflow.config.params import compose
from aeflow.errors import TrainingError
from aeflow.training.recovery import ResumeDir
from aeflow.training.train import train
from tests.conftest import REPO
from tests.helpers import ran_stages
from tests.reliability.conftest import (
    TINY,
    copy_project,
    dvc,
    frozen_env,
    logged_models,
    store_runs,
    write_params,
)

EPOCHS = 4


def _epochs_in_curve(curve: Path) -> int:
    return len(curve.read_text().splitlines()) - 1 if curve.exists() else 0


def _kill_train_stage(
    repro: subprocess.Popen, project: Path, sig: signal.Signals = signal.SIGKILL, timeout: float = 600
) -> int:
    """Send `sig` to the train stage once epoch 0 is on disk (its checkpoint and its loss-curve row).

    Epoch 1 then has 120 batches to go, so the signal lands mid-epoch.
    """
    deadline = time.monotonic() + timeout
    curve = project / "plots" / "loss.csv"
    while not (list((project / ".resume").glob("*/last.ckpt")) and _epochs_in_curve(curve) >= 1):
        assert repro.poll() is None, f"dvc repro ended before epoch 0 was saved:\n{repro.stdout.read()}"
        assert time.monotonic() < deadline, f"epoch 0 was not saved within {timeout} s"
        time.sleep(0.05)
    # An exact argv element, so a shell wrapping the command (`sh -c "python -m ..."`, which DVC
    # uses when $SHELL is unset or not exec-ing) is not taken for the stage itself.
    stages = [
        p for p in psutil.Process(repro.pid).children(recursive=True) if "aeflow.stages.train" in p.cmdline()
    ]
    assert len(stages) == 1, stages
    os.kill(stages[0].pid, sig)
    return stages[0].pid


# Trains through MLflow, whose run records start processes (git for the commit): not a unit test.
THROUGH_MLFLOW = pytest.mark.integration


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sig", "status_after_kill"),
    [
        (signal.SIGKILL, "RUNNING"),  # killed outright: nothing could mark the run
        (signal.SIGTERM, "FAILED"),  # Lightning's handler stops at the next batch; train() marks the run
    ],
    ids=["SIGKILL", "SIGTERM"],
)
def test_killed_train_stage_resumes_on_next_repro(
    downloaded_project, mnist_slice, tmp_path, sig, status_after_kill
):
    project = copy_project(downloaded_project, tmp_path / "project")
    write_params(
        project,
        [
            *mnist_slice,
            f"trainer.max_epochs={EPOCHS}",
            "data.batch_size=64",  # the slice's 11,000 training images: 171 batches an epoch
            "trainer.limit_train_batches=120",
            "trainer.limit_val_batches=4",
            "trainer.enable_progress_bar=false",
        ],
    )
    proc = subprocess.Popen(
        ["dvc", "repro", "train"],
        cwd=project,
        env=frozen_env(project),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    _kill_train_stage(proc, project, sig)
    out, _ = proc.communicate(timeout=600)  # a hang guard, not a speed check
    assert proc.returncode != 0, out
    if sig == signal.SIGTERM:  # stopped through train()'s handler, which names where it resumes from
        assert "Training stopped (SIGTERMException); the next run with this config resumes from" in out, out

    # What the kill left: a complete checkpoint to resume from, an unfinished run, no finished outputs.
    [kept] = list((project / ".resume").glob("*/last.ckpt"))
    epochs_done = torch.load(kept, weights_only=True)["epoch"] + 1
    assert 1 <= epochs_done < EPOCHS
    [killed_run] = store_runs(project / "mlflow.db")
    assert killed_run.info.status == status_after_kill
    assert not (project / "metrics/train.json").exists()
    assert not list(project.rglob("*.tmp")), "a temporary file was left behind"

    out = dvc(project, "repro")
    # `dvc repro train` ran only train's upstream: the baselines run now too.
    assert ran_stages(out) == {"baselines", "train", "evaluate", "package", "visualize"}
    assert f"Resuming interrupted MLflow run {killed_run.info.run_id} after epoch {epochs_done}" in out, out

    metrics = json.loads((project / "metrics/train.json").read_text())
    assert metrics["epochs"] == EPOCHS
    rows = (project / "plots/loss.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == [str(e) for e in range(EPOCHS)], rows
    [run] = store_runs(project / "mlflow.db")
    assert run.info.run_id == killed_run.info.run_id
    assert run.info.status == "FINISHED"
    assert run.data.tags["aeflow.resume_count"] == "1"
    assert run.data.tags["aeflow.resumed_after_epoch"] == str(epochs_done)
    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    # One validation point per epoch: a resume that re-trained finished epochs would log them twice.
    val = client.get_metric_history(run.info.run_id, "val/loss")
    assert len(val) == EPOCHS and len({m.step for m in val}) == EPOCHS, [(m.step, m.value) for m in val]
    assert "test/sq_err_per_image" in run.data.metrics
    assert logged_models(client, run.info.run_id) == {"model"}
    assert "figures" in {a.path for a in client.list_artifacts(run.info.run_id)}
    # Finished: the resume folder is gone, so nothing can resume this run again.
    assert not list((project / ".resume").glob("*/last.ckpt"))
    assert ran_stages(dvc(project, "repro")) == set()


# --- in process: resumed == uninterrupted, stale checkpoints are never resumed ---------------------


class CountTraining(pl.Callback):
    """What one `train()` call trained: the epochs it started and the batches it ran."""

    def __init__(self) -> None:
        self.epochs: list[int] = []
        self.batches = 0
        self.batches_per_epoch = 0
        self.first_step = -1

    def on_train_start(self, trainer, pl_module) -> None:
        self.first_step = trainer.global_step  # restored from the checkpoint when resuming
        self.batches_per_epoch = trainer.num_training_batches

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.epochs.append(trainer.current_epoch)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.batches += 1


class CrashAt(pl.Callback):
    """Stands in for a kill: raises mid-epoch, after some checkpoints were written."""

    def __init__(self, epoch: int, batch: int) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            raise RuntimeError("simulated crash")


def tiny(tmp: Path, data, *overrides: str):
    folder, files = data
    cfg = compose([*TINY, "trainer.max_epochs=3", *overrides], conf_dir=REPO / "conf")
    cfg.paths.data, cfg.data.files = str(folder), files
    for key in (
        "checkpoints",
        "run_info",
        "train_metrics",
        "eval_metrics",
        "loss_curve",
        "figures",
        "resume",
    ):
        cfg.paths[key] = str(tmp / cfg.paths[key])
    cfg.mlflow.tracking_uri = f"sqlite:///{tmp / 'mlflow.db'}"
    cfg.mlflow.log_model = False
    return cfg


def state_dict(path) -> dict:
    return torch.load(path, weights_only=True)["state_dict"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_data):
    cfg = tiny(tmp_path_factory.mktemp("uninterrupted"), tiny_data)
    return cfg, train(cfg)


@THROUGH_MLFLOW
def test_crashed_run_resumes_to_the_same_weights_in_the_same_run(uninterrupted, tiny_data, tmp_path, caplog):
    ref_cfg, ref = uninterrupted
    cfg = tiny(tmp_path, tiny_data)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(cfg, callbacks=[CrashAt(epoch=1, batch=3)])
    client = mlflow.MlflowClient(cfg.mlflow.tracking_uri)
    crashed = json.loads(Path(cfg.paths.run_info).read_text())["run_id"]
    assert client.get_run(crashed).info.status == "FAILED"
    resume = ResumeDir.for_config(cfg)
    assert resume.checkpoint() is not None

    counted = CountTraining()
    with caplog.at_level(logging.WARNING, logger="aeflow"):
        result = train(cfg, callbacks=[counted])
    assert f"Resuming interrupted MLflow run {crashed} after epoch 1 from" in caplog.text, caplog.text
    # Resumed, not restarted: this process trained epochs 1 and 2 only, from epoch 0's optimizer step.
    assert counted.epochs == [1, 2]
    assert counted.first_step == counted.batches_per_epoch > 0
    assert counted.batches == 2 * counted.batches_per_epoch
    assert result.run_id == crashed
    run = client.get_run(crashed)
    assert run.info.status == "FINISHED"
    assert run.data.tags["aeflow.resumed_after_epoch"] == "1"
    assert result.metrics["epochs"] == 3
    for name in ("best.ckpt", "last.ckpt"):
        got, want = (
            state_dict(Path(cfg.paths.checkpoints) / name),
            state_dict(Path(ref_cfg.paths.checkpoints) / name),
        )
        assert all(torch.equal(got[k], want[k]) for k in want), f"{name} differs from an uninterrupted run"
    assert Path(cfg.paths.loss_curve).read_text() == Path(ref_cfg.paths.loss_curve).read_text()
    assert not resume.path.exists()


@THROUGH_MLFLOW
def test_stale_checkpoints_are_never_resumed(uninterrupted, tiny_data, tmp_path):
    # A finished run leaves nothing to resume: the same config trains again from the start.
    ref_cfg, ref = uninterrupted
    assert not ResumeDir.for_config(ref_cfg).path.exists()

    # A crashed run's checkpoint is not resumed by a different config...
    cfg = tiny(tmp_path, tiny_data)
    with pytest.raises(RuntimeError):
        train(cfg, callbacks=[CrashAt(epoch=1, batch=0)])
    other = tiny(tmp_path, tiny_data, "optimizer.lr=0.02")
    assert ResumeDir.for_config(other).key != ResumeDir.for_config(cfg).key
    result = train(other)
    run = mlflow.MlflowClient(other.mlflow.tracking_uri).get_run(result.run_id)
    assert "aeflow.resumed_after_epoch" not in run.data.tags

    # ...and a checkpoint that does not load weights-only (truncated) is ignored, not resumed.
    resume = ResumeDir.for_config(cfg)
    blob = resume.last.read_bytes()
    resume.last.write_bytes(blob[: len(blob) // 2])
    assert resume.checkpoint() is None
    result = train(cfg)
    assert result.metrics["epochs"] == 3
    run = mlflow.MlflowClient(cfg.mlflow.tracking_uri).get_run(result.run_id)
    assert run.data.tags["aeflow.resumed_after_epoch"] == "0"  # same run, restarted from the start


def _crash_mid_training(cfg) -> str:
    """Train `cfg` until a crash in epoch 1 (epoch 0's checkpoint kept); the crashed MLflow run's id."""
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(cfg, callbacks=[CrashAt(epoch=1, batch=3)])
    assert ResumeDir.for_config(cfg).checkpoint() is not None
    return json.loads(Path(cfg.paths.run_info).read_text())["run_id"]


def _delete_run(cfg, run_id: str) -> None:
    mlflow.MlflowClient(cfg.mlflow.tracking_uri).delete_run(run_id)


def _delete_and_collect_run(cfg, run_id: str) -> None:
    _delete_run(cfg, run_id)
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    subprocess.run(
        [mlflow_cli, "gc", "--backend-store-uri", cfg.mlflow.tracking_uri, "--run-ids", run_id],
        check=True,
        capture_output=True,
    )


def _track_in_a_new_store(cfg, run_id: str) -> None:
    # The tracking store is not part of the resume key: the same training resumes against it.
    cfg.mlflow.tracking_uri = cfg.mlflow.tracking_uri.replace("mlflow.db", "new-store.db")


@THROUGH_MLFLOW
@pytest.mark.parametrize(
    "remove_run",
    [_delete_run, _delete_and_collect_run, _track_in_a_new_store],
    ids=["deleted", "deleted-and-garbage-collected", "other-store"],
)
def test_resume_whose_mlflow_run_is_gone_trains_on_in_a_new_run_linked_to_it(
    tiny_data, tmp_path, caplog, remove_run
):
    cfg = tiny(tmp_path, tiny_data)
    crashed = _crash_mid_training(cfg)
    remove_run(cfg, crashed)

    counted = CountTraining()
    with caplog.at_level(logging.WARNING, logger="aeflow"):
        result = train(cfg, callbacks=[counted])
    assert f"Resuming training of run {crashed} after epoch 1 in a new run" in caplog.text, caplog.text
    assert counted.epochs == [1, 2]  # from the checkpoint, not from the start
    assert result.run_id != crashed and result.metrics["epochs"] == 3
    run = mlflow.MlflowClient(cfg.mlflow.tracking_uri).get_run(result.run_id)
    assert run.info.status == "FINISHED" and run.info.lifecycle_stage == "active"
    assert run.data.tags["aeflow.resumed_from_run"] == crashed
    assert run.data.tags["aeflow.resume_count"] == "1"
    assert run.data.tags["aeflow.resumed_after_epoch"] == "1"
    assert run.data.params["optimizer.lr"] == str(cfg.optimizer.lr)  # a new run gets the config too
    assert json.loads(Path(cfg.paths.run_info).read_text())["run_id"] == result.run_id
    assert not ResumeDir.for_config(cfg).path.exists()


# Holds an exclusive lock on the file argv[1] until its stdin closes, as a training process would.
HOLD_LOCK = """
import fcntl, sys
lock = open(sys.argv[1], "a")
fcntl.flock(lock, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.read()
"""


@THROUGH_MLFLOW
def test_a_second_process_training_the_same_config_is_refused_until_the_first_ends(tiny_data, tmp_path):
    cfg = tiny(tmp_path, tiny_data)
    crashed = _crash_mid_training(cfg)
    resume = ResumeDir.for_config(cfg)
    lock = resume.root / f"{resume.key}.lock"
    checkpoint = resume.last.read_bytes()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(lock)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline() == "held\n"
        message = f"Another process is training this exact config in this folder (lock {lock} is held)"
        with pytest.raises(TrainingError, match=re.escape(message) + ".*Wait for it"):
            train(cfg)
        # Refused before anything was touched: the checkpoint and the run stay the first process's.
        assert resume.last.read_bytes() == checkpoint
        [run] = store_runs(tmp_path / "mlflow.db")
        assert run.info.run_id == crashed and run.info.status == "FAILED"
        # Another config has its own key and lock: it trains meanwhile.
        assert train(tiny(tmp_path / "other", tiny_data, "seed=7")).metrics["epochs"] == 3
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    assert train(cfg).run_id == crashed  # once the holder is gone the same config resumes


# Re-saves a checkpoint through AtomicCheckpointIO in a loop, 128 MB a write, until killed.
WRITER = """
import sys, torch
from aeflow.training.checkpoints import AtomicCheckpointIO
target = sys.argv[1]
checkpoint = {**torch.load(target, weights_only=True), "padding": torch.ones(32 * 2**20)}
while True:
    AtomicCheckpointIO().save_checkpoint(checkpoint, target)
"""


def _kill_mid_write(last: Path, attempts: int = 5, timeout: float = 300) -> list[Path]:
    """SIGKILL a process writing `last` once its temporary file has bytes; the temporaries it left."""
    for _ in range(attempts):
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(last)], stderr=subprocess.PIPE, text=True
        )
        deadline = time.monotonic() + timeout
        while not any(p.stat().st_size > 0 for p in last.parent.glob(".*.tmp") if p.exists()):
            assert writer.poll() is None, writer.stderr.read()
            assert time.monotonic() < deadline, f"no temporary file appeared beside {last} in {timeout} s"
            time.sleep(0.01)
        writer.kill()
        writer.wait()
        left = list(last.parent.glob(".*.tmp"))
        if left:  # else the write had just been renamed: try again
            return left
    raise AssertionError(f"{attempts} kills all landed between two writes")


def test_kill_during_a_checkpoint_write_keeps_the_old_one_and_the_next_run_removes_the_leftover(
    tiny_data, tmp_path
):
    cfg = tiny(tmp_path, tiny_data)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(cfg, callbacks=[CrashAt(epoch=1, batch=3)])
    resume = ResumeDir.for_config(cfg)
    before = state_dict(resume.last)

    left = _kill_mid_write(resume.last)
    # The old checkpoint (or a whole rewrite of it) is in place; the killed write is only a temporary.
    kept = torch.load(resume.last, weights_only=True)
    assert all(torch.equal(kept["state_dict"][k], v) for k, v in before.items())
    assert resume.checkpoint() == resume.last

    seen = []

    class TemporariesAtStart(pl.Callback):
        def on_train_start(self, trainer, pl_module) -> None:
            seen.extend(resume.path.glob(".*.tmp"))

    result = train(cfg, callbacks=[TemporariesAtStart()])
    assert seen == [], f"{left} still there when training resumed"
    run = mlflow.MlflowClient(cfg.mlflow.tracking_uri).get_run(result.run_id)
    assert run.data.tags["aeflow.resumed_after_epoch"] == "1"
    assert not list(tmp_path.rglob("*.tmp"))


# --- determinism -------------------------------------------------------------------------------------


@THROUGH_MLFLOW
def test_same_config_and_seed_give_identical_test_metrics_other_seed_differs(
    uninterrupted, tiny_data, tmp_path
):
    from aeflow.config.instantiate import instantiate_datamodule
    from aeflow.evaluation.evaluate import evaluate
    from aeflow.models.weights import load_weights

    def test_metrics(cfg) -> dict:
        result = evaluate(
            cfg, load_weights(cfg, Path(cfg.paths.checkpoints) / "best.ckpt"), instantiate_datamodule(cfg)
        )
        return getattr(result, "metrics", result)  # the evaluate stage's metrics/evaluate.json

    ref_cfg, _ = uninterrupted
    same = tiny(tmp_path / "same", tiny_data)
    train(same)
    other_seed = tiny(tmp_path / "seed", tiny_data, "seed=7")
    train(other_seed)
    reference = test_metrics(ref_cfg)
    assert test_metrics(same) == reference  # exactly, not approximately
    assert test_metrics(other_seed)["test"]["mse"] != reference["test"]["mse"]
