"""Tracking store trouble: an unreachable server fails fast; a server lost mid-run loses no training."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import pytest
import torch

from aeflow.tracking import runs as tracking
from tests.conftest import make_synthetic_idx
from tests.reliability.conftest import TINY, free_port, logged_models, stage_env, write_params


def test_closed_port_fails_within_30_s_naming_the_uri(tiny_data, tmp_path):
    folder, files = tiny_data
    write_params(tmp_path, TINY, folder, files)
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "aeflow.stages.train"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=stage_env(MLFLOW_TRACKING_URI=uri),
    )
    elapsed = time.monotonic() - started
    assert proc.returncode != 0
    message = proc.stderr.strip().splitlines()[-1]
    assert message.startswith("error: Cannot reach the MLflow tracking server") and uri in message, message
    assert elapsed < 30, f"took {elapsed:.0f} s"
    # Before training: no checkpoint, no metrics, nothing to resume.
    assert not (tmp_path / "models").exists() and not (tmp_path / ".resume").exists()


def test_preflight_does_not_retry_and_hides_credentials():
    uri = f"http://alice:hunter2@127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(tracking.TrackingError) as err:
        tracking.preflight(uri)
    assert time.monotonic() - started < 10
    assert "hunter2" not in str(err.value) and "http://***@127.0.0.1" in str(err.value)


def _start_server(port: int, root: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{root / 'server.db'}",
            "--artifacts-destination",
            (root / "server-artifacts").as_uri(),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env=stage_env(),
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return proc
        except OSError:
            assert proc.poll() is None, "mlflow server exited"
            time.sleep(0.5)
    raise AssertionError("mlflow server did not start")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)  # a crash, not a clean shutdown
        proc.wait(timeout=30)


@pytest.mark.slow
def test_server_lost_mid_run_keeps_the_checkpoints_and_the_next_run_finishes(tmp_path, frozen_src):
    data = tmp_path / "data"
    files = make_synthetic_idx(data, n_train=4000, n_test=40)
    project = tmp_path / "project"
    epochs = 4
    write_params(project, [*TINY, f"trainer.max_epochs={epochs}", "data.val_size=100"], data, files)
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    # Fail fast once the server is gone (MLflow's default retries for minutes).
    env = stage_env(
        MLFLOW_TRACKING_URI=uri,
        MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
        MLFLOW_HTTP_REQUEST_TIMEOUT="5",
        PYTHONPATH=frozen_src,
    )
    server = _start_server(port, tmp_path)
    try:
        train = subprocess.Popen(
            [sys.executable, "-m", "aeflow.stages.train"],
            cwd=project,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        curve = project / "plots" / "loss.csv"
        while not (curve.exists() and len(curve.read_text().splitlines()) >= 2):  # an epoch was logged
            assert train.poll() is None, train.communicate()[1][-3000:]
            time.sleep(0.05)
        _stop(server)
        _, err = train.communicate(timeout=600)
        assert train.returncode != 0
        message = err.strip().splitlines()[-1]
        assert "Training finished but logging to the MLflow store" in message and uri in message, err[-3000:]
        # Nothing trained was lost: every epoch is in the checkpoints on disk.
        last = torch.load(project / "models" / "last.ckpt", weights_only=True)
        assert last["epoch"] == epochs - 1
        assert (project / "models" / "best.ckpt").is_file()
        assert len(curve.read_text().splitlines()) == epochs + 1

        # The server comes back: the next run resumes after the last epoch and finishes the same run.
        server = _start_server(port, tmp_path)
        again = subprocess.run(
            [sys.executable, "-m", "aeflow.stages.train"],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert again.returncode == 0, again.stderr[-3000:]
        client = mlflow.MlflowClient(uri)
        [run] = client.search_runs([client.get_experiment_by_name("autoencoder").experiment_id])
        assert run.info.status == "FINISHED"
        assert run.data.tags["aeflow.resumed_after_epoch"] == str(epochs)
        assert logged_models(client, run.info.run_id) == {"model"}
        assert not list((project / ".resume").glob("*/*.ckpt"))
    finally:
        _stop(server)
