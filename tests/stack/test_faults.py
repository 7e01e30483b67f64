"""Faults of the team stack during a pipeline: PostgreSQL restarted while a model trains, and the
object store gone when the package stage uploads the model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import mlflow
import pytest
from mlflow.entities import LoggedModelStatus

from aeflow.team import stack as team
from aeflow.tracking import logged_models
from tests.stack.conftest import (
    BIN,
    duplicated_metric_steps,
    frozen,
    pg_rows,
    run_in,
    stack_env,
    team_command,
    tiny_clone,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EPOCHS = 4
DEADLINE_S = 600


def epochs_logged(stack: team.Stack) -> int:
    """train/loss rows of the RUNNING runs: the epochs training has finished and logged."""
    return pg_rows(
        stack,
        "SELECT count(*) FROM metrics WHERE key = 'train/loss' AND run_uuid IN "
        "(SELECT run_uuid FROM runs WHERE status = 'RUNNING')",
    )[0][0]


def assert_metrics_complete_once(client: mlflow.MlflowClient, stack: team.Stack, run_id: str) -> None:
    """The run FINISHED, every epoch's val/loss and train/loss logged once, no metric step twice."""
    assert client.get_run(run_id).info.status == "FINISHED"
    for key in ("val/loss", "train/loss"):
        steps = [m.step for m in client.get_metric_history(run_id, key)]
        assert len(steps) == len(set(steps)) == EPOCHS, (key, steps)  # logged once per epoch
    assert duplicated_metric_steps(stack, [run_id]) == []


def test_postgres_restarted_during_training(stack, tiny_mirror, tmp_path):
    project = tiny_clone(tmp_path, tiny_mirror)
    overrides = [f"trainer.max_epochs={EPOCHS}", "mlflow.experiment_name=faults"]
    run_in(project, stack, "python", "-m", "aeflow.config", *overrides)
    run_in(project, stack, "dvc", "repro", "download")
    # Its own process group: `dvc repro` and the stage it runs are frozen together.
    proc = subprocess.Popen(
        [str(BIN / "dvc"), "repro", "train"],
        cwd=project,
        env=stack_env(stack, project),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    # Training runs in slices of 20 ms and is looked at frozen, so it is caught after its first
    # logged epoch and before its last whatever the machine's speed; PostgreSQL restarts while
    # the run is RUNNING, its next epochs still to log.
    deadline = time.monotonic() + DEADLINE_S
    while True:
        with frozen(proc.pid):
            logged = epochs_logged(stack)
            if 1 <= logged < EPOCHS:
                assert not (project / "metrics/train.json").exists()  # still training
                team.restart_postgres(stack)
                break
        if proc.poll() is not None:
            pytest.fail(f"`dvc repro` ended before an epoch was logged:\n{proc.stdout.read()[-3000:]}")
        assert logged < EPOCHS and time.monotonic() < deadline, f"training not caught ({logged} epochs)"
        time.sleep(0.02)
    out, _ = proc.communicate(timeout=DEADLINE_S)
    if proc.returncode != 0:  # allowed: one clear line, and the next `dvc repro` finishes the run
        errors = [line for line in out.splitlines() if line.startswith(("ERROR", "error"))]
        assert any("MLflow" in line for line in errors), out[-3000:]
        run_in(project, stack, "dvc", "repro", "train")
    run_id = json.loads((project / "metrics/train.json").read_text())["mlflow_run_id"]
    assert_metrics_complete_once(mlflow.MlflowClient(stack.tracking_uri), stack, run_id)


def test_object_store_gone_when_the_model_uploads(stack, tiny_mirror, tmp_path, monkeypatch):
    project = tiny_clone(tmp_path, tiny_mirror)
    overrides = [f"trainer.max_epochs={EPOCHS}", "mlflow.experiment_name=faults"]
    run_in(project, stack, "python", "-m", "aeflow.config", *overrides)
    run_in(project, stack, "dvc", "repro", "evaluate")
    before = outputs(project)
    s3 = team.running_pid(stack.pid_file("s3"), "moto_server")
    os.kill(s3, signal.SIGKILL)
    while Path(f"/proc/{s3}").exists() and team.running_pid(stack.pid_file("s3"), "moto_server"):
        time.sleep(0.05)

    # Two retries of a failed request instead of MLflow's seven (minutes of backoff).
    failed = run_in(
        project, stack, "dvc", "repro", "package", check=False, MLFLOW_HTTP_REQUEST_MAX_RETRIES="2"
    )
    out = failed.stdout + failed.stderr
    print(out[-3000:])
    assert failed.returncode != 0, out[-3000:]
    # One line naming the store the client writes to: the tracking server's artifact proxy
    # (the S3 bucket behind it is the server's setting; its log names it).
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and stack.tracking_uri in errors[0], out[-3000:]
    assert "mlflow-artifacts" in errors[0], errors[0]
    assert outputs(project) == before  # nothing trained or evaluated is lost

    # The store back (`aeflow team up` starts what is missing), the package stage alone runs again.
    assert team_command(stack.root, "up").returncode == 0
    assert team.Stack.load(stack.root).s3_port == stack.s3_port  # the clones' DVC remote stays valid
    again = run_in(project, stack, "dvc", "repro", "package")
    assert "Running stage 'package'" in again.stdout and "Running stage 'train'" not in again.stdout
    assert outputs(project) == before
    client = mlflow.MlflowClient(stack.tracking_uri)
    run_id = json.loads((project / "metrics/train.json").read_text())["mlflow_run_id"]
    assert_metrics_complete_once(client, stack, run_id)
    # The failed upload's model is FAILED; the one logged after is the run's model (`runs:/`).
    run = client.get_run(run_id)
    models = client.search_logged_models([run.info.experiment_id], f"source_run_id = '{run_id}'")
    assert [m.name for m in logged_models.ready(models)] == ["model"], models
    assert {m.status for m in models} == {LoggedModelStatus.READY, LoggedModelStatus.FAILED}, models
    # MLflow resolves the model behind `runs:/` on the tracking URI of the environment.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", stack.tracking_uri)
    assert "MLmodel" in {a.path.split("/")[-1] for a in client.list_artifacts(run_id, "model")}


def outputs(project: Path) -> dict[str, int]:
    """The modification times of what training and evaluation wrote."""
    paths = ("models/best.ckpt", "metrics/train.json", "metrics/evaluate.json")
    return {p: (project / p).stat().st_mtime_ns for p in paths}
