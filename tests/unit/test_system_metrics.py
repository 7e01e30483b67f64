"""System metrics while training: sampled into the run, and a lost store never decides the outcome."""

from __future__ import annotations

import time

import mlflow
import pytest

from aeflow.tracking import system

STORE = "mlflow.db"


def new_run(tmp_path) -> tuple[str, mlflow.MlflowClient, str]:
    """(tracking URI, client, id) of a new run in a SQLite store of its own under `tmp_path`."""
    uri = f"sqlite:///{tmp_path / STORE}"
    client = mlflow.MlflowClient(uri)
    return uri, client, client.create_run(client.create_experiment("system")).info.run_id


def test_samples_land_in_the_run_and_leave_its_status_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")
    uri, client, run_id = new_run(tmp_path)
    with system.logged(run_id, uri):
        time.sleep(1.0)
    run = client.get_run(run_id)
    assert "system/cpu_utilization_percentage" in run.data.metrics, sorted(run.data.metrics)
    assert run.info.status == "RUNNING"  # the training ends its run, not the monitor
    assert mlflow.active_run() is None


def test_the_block_s_own_error_comes_through_when_the_store_is_gone(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")
    uri, client, run_id = new_run(tmp_path)
    db = tmp_path / STORE
    with pytest.raises(KeyError, match="the block's"), system.logged(run_id, uri):
        db.unlink()
        db.mkdir()  # the store cannot be opened any more
        raise KeyError("the block's")


def test_nothing_is_sampled_when_switched_off(tmp_path, monkeypatch):
    monkeypatch.setenv(system.ENABLE_ENV, "false")
    uri, client, run_id = new_run(tmp_path)
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.1")
    with system.logged(run_id, uri):
        time.sleep(0.5)
    assert not [k for k in client.get_run(run_id).data.metrics if k.startswith("system/")]


def test_a_training_shorter_than_the_sampling_interval_still_gets_one_sample(tmp_path, monkeypatch):
    # MLflow's monitor publishes only after a whole interval: without the closing sample, a block
    # this short would leave the run without system metrics.
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "30")
    uri, client, run_id = new_run(tmp_path)
    with system.logged(run_id, uri):
        time.sleep(0.2)
    history = client.get_metric_history(run_id, "system/cpu_utilization_percentage")
    assert len(history) == 1, sorted(client.get_run(run_id).data.metrics)
