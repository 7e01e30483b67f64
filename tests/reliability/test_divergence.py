"""A loss that becomes NaN/inf stops the train stage at once: clear error, FAILED run, no model logged."""

from __future__ import annotations

import re

import mlflow

from tests.reliability.conftest import TINY, logged_models, run_stage, store_runs, write_params

# Linear layers, BCE on logits and a huge SGD step: the weights blow up within a few steps.
DIVERGES = [
    "model.encoder.activation=identity",
    "model.encoder.code_activation=identity",
    "model.decoder.activation=identity",
    "model.loss=bce",
    "trainer.max_epochs=5",
]


def huge_sgd_step(cfg) -> None:
    cfg.optimizer = {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 1e10}


def test_nan_loss_fails_the_stage_and_the_run_without_a_model(tiny_data, tmp_path):
    folder, files = tiny_data
    write_params(tmp_path, [*TINY, *DIVERGES], folder, files, edit=huge_sgd_step)
    proc = run_stage(tmp_path)
    assert proc.returncode != 0
    message = proc.stderr.strip().splitlines()[-1]
    assert re.search(
        r"^error: train loss became (nan|inf|-inf) at epoch \d+, step \d+: training diverged", message
    ), proc.stderr[-2000:]
    assert "optimizer.lr" in message  # says what to change
    [run] = store_runs(tmp_path / "mlflow.db")
    assert run.info.status == "FAILED"
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    # No model logged as if it were good: only the config the run was started with.
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["config"]
    assert logged_models(client, run.info.run_id) == set()
    assert "best_val_loss" not in run.data.metrics
    # Nothing DVC would cache as a result, and nothing left to resume (it would diverge again).
    assert not (tmp_path / "models" / "best.ckpt").exists()
    assert not (tmp_path / "metrics" / "train.json").exists()
    assert not list((tmp_path / ".resume").glob("*/*.ckpt"))
