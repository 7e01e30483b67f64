"""Tracking store trouble: an unreachable server fails fast; a server lost mid-run loses no training."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time

import mlflow
import pytest
import torch

from aeflow.tracking import runs as tracking
from tests.conftest import make_synthetic_idx
from tests.helpers import start_mlflow_server, stop_server
from tests.reliability.conftest import (
    TINY,
    free_port,
    run_stage,
    stage_env,
    write_params,
)


class SilentServer:
    """A real listening socket that accepts every connection, reads its request and never answers."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.uri = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.requests: list[bytes] = []
        self.held: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed
                return
            self.held.append(conn)
            conn.settimeout(30)
            try:
                self.requests.append(conn.recv(65536))
            except OSError:
                self.requests.append(b"")

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


@pytest.fixture
def silent_server():
    server = SilentServer()
    yield server
    server.close()


def _request_lines(server: SilentServer) -> list[str]:
    return [r.split(b"\r\n", 1)[0].decode() for r in server.requests]


@pytest.mark.parametrize("listener", ["closed port", "server that never answers"])
def test_unreachable_server_fails_naming_the_uri_before_reading_data_or_creating_a_run(
    listener, silent_server, tiny_data, tmp_path
):
    _, files = tiny_data
    # No data there: a stage that read data before checking the store would fail on that instead.
    write_params(tmp_path, TINY, tmp_path / "no-data-here", files)
    uri = f"http://127.0.0.1:{free_port()}" if listener == "closed port" else silent_server.uri
    proc = run_stage(tmp_path, MLFLOW_TRACKING_URI=uri)
    assert proc.returncode != 0
    message = proc.stderr.strip().splitlines()[-1]
    assert message.startswith(f"error: Cannot reach the MLflow tracking server {uri} ("), proc.stderr[-3000:]
    if listener != "closed port":
        assert "timed out" in message, message
        # One request, the health check; no retry, and no run was created (that would be a POST).
        assert _request_lines(silent_server) == ["GET /health HTTP/1.1"]
    # Before training: no checkpoint, no metrics, nothing to resume.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_preflight_sends_one_request_waits_its_timeout_and_hides_credentials(silent_server):
    uri = silent_server.uri.replace("http://", "http://alice:hunter2@")
    raised: list[BaseException] = []
    waited: list[float] = []

    def check() -> None:
        start = time.monotonic()
        try:
            tracking.preflight(uri)
        except BaseException as exc:  # noqa: BLE001 (examined below)
            raised.append(exc)
        waited.append(time.monotonic() - start)

    worker = threading.Thread(target=check, daemon=True)
    worker.start()
    worker.join(3 * tracking.PREFLIGHT_TIMEOUT_S)
    assert not worker.is_alive(), (
        f"preflight still waiting after 3x its {tracking.PREFLIGHT_TIMEOUT_S} s timeout: it retries or "
        "does not pass the timeout on"
    )
    [err] = raised
    assert isinstance(err, tracking.TrackingError), err
    assert _request_lines(silent_server) == ["GET /health HTTP/1.1"]  # reached the server, once
    # Waited for its timeout, measured here (the server never answers), and no longer than a retry.
    assert tracking.PREFLIGHT_TIMEOUT_S - 0.1 <= waited[0] < 2 * tracking.PREFLIGHT_TIMEOUT_S, (
        waited,
        str(err),
    )
    assert "hunter2" not in str(err) and f"http://***@127.0.0.1:{uri.rsplit(':', 1)[1]} (" in str(err)


@pytest.mark.slow
def test_server_lost_mid_run_keeps_the_checkpoints_and_the_next_run_finishes(tmp_path, frozen_src):
    """With MLflow's client set to give up at once (no retries, a 5 s timeout). MLflow's default
    client retries a lost server for minutes before the run fails the same way; that wait is
    MLflow's, and this test does not cover it."""
    data = tmp_path / "data"
    files = make_synthetic_idx(data, n_train=4000, n_test=40)
    project = tmp_path / "project"
    epochs = 4
    write_params(project, [*TINY, f"trainer.max_epochs={epochs}", "data.val_size=100"], data, files)
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    # Fail fast once the server is gone, instead of MLflow's default minutes of retries.
    env = stage_env(
        MLFLOW_TRACKING_URI=uri,
        MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
        MLFLOW_HTTP_REQUEST_TIMEOUT="5",
        PYTHONPATH=frozen_src,
    )
    server = start_mlflow_server(tmp_path, port)
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
        deadline = time.monotonic() + 600
        while not (curve.exists() and len(curve.read_text().splitlines()) >= 2):  # an epoch was logged
            assert train.poll() is None, train.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "no epoch was logged within 600 s"
            time.sleep(0.05)
        stop_server(server, crash=True)
        _, err = train.communicate(timeout=600)
        assert train.returncode != 0
        message = err.strip().splitlines()[-1]
        assert "Training finished but logging to the MLflow store" in message and uri in message, err[-3000:]
        # Nothing trained was lost: every epoch is in the checkpoints on disk.
        last = torch.load(project / "models" / "last.ckpt", weights_only=True)
        assert last["epoch"] == epochs - 1
        assert (project / "models" / "best.ckpt").is_file()
        assert len(curve.read_text().splitlines()) == epochs + 1
        # ...and in the resume folder, with the run id, for the next run to resume from.
        [resume] = [p for p in (project / ".resume").iterdir() if p.is_dir()]
        assert torch.load(resume / "last.ckpt", weights_only=True)["epoch"] == epochs - 1
        assert torch.load(resume / "best.ckpt", weights_only=True)["state_dict"]
        state = json.loads((project / ".resume" / f"{resume.name}.json").read_text())
        assert state["run_id"] == json.loads((project / "models" / "run.json").read_text())["run_id"]

        # The server comes back: the next run resumes after the last epoch and finishes the same run.
        server = start_mlflow_server(tmp_path, port)
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
        # The summary metrics the lost server missed (the model is the package stage's to log).
        assert {"best_val_loss", "train_time_s"} <= set(run.data.metrics)
        assert not list((project / ".resume").glob("*/*.ckpt"))
    finally:
        stop_server(server, crash=True)
