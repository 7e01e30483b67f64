"""Faults of the team stack during a pipeline: PostgreSQL restarted while a model trains, and the
object store gone while the model is uploaded."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import mlflow
import pytest

from aeflow.team import stack as team
from tests.stack.conftest import BIN, pg_rows, run_in, stack_env, team_command, tiny_clone

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EPOCHS = 4


def start_repro(project, stack, **extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [str(BIN / "dvc"), "repro", "train"],
        cwd=project,
        env=stack_env(stack, project, **extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_until(condition, proc: subprocess.Popen, what: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"`dvc repro` ended before {what}:\n{proc.stdout.read()[-3000:]}")
        assert time.monotonic() < deadline, f"never {what}"
        time.sleep(0.05)


def assert_complete_once(client: mlflow.MlflowClient, stack: team.Stack, run_id: str) -> None:
    """Every epoch's val/loss and train/loss once, the model logged."""
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run_id, "val/loss")] == sorted(
        {m.step for m in client.get_metric_history(run_id, "val/loss")}
    )
    assert len(client.get_metric_history(run_id, "val/loss")) == EPOCHS
    steps = [m.step for m in client.get_metric_history(run_id, "train/loss")]
    assert len(steps) == len(set(steps)) == EPOCHS, steps  # logged once per epoch
    assert (
        pg_rows(
            stack,
            "SELECT key, step FROM metrics WHERE run_uuid = %s AND key NOT LIKE 'system/%%' "
            "GROUP BY key, step HAVING count(*) > 1",
            run_id,
        )
        == []
    )
    models = client.search_logged_models([run.info.experiment_id], f"source_run_id = '{run_id}'")
    assert [m.name for m in models] == ["model"]


def test_postgres_restarted_during_training(stack, tiny_mirror, tmp_path):
    project = tiny_clone(tmp_path, tiny_mirror)
    run_in(
        project,
        stack,
        "python",
        "-m",
        "aeflow.config",
        f"trainer.max_epochs={EPOCHS}",
        "mlflow.experiment_name=faults",
    )
    run_in(project, stack, "dvc", "repro", "download")
    proc = start_repro(project, stack)

    def training_logged() -> bool:
        return bool(
            pg_rows(
                stack,
                "SELECT 1 FROM metrics WHERE key = 'train/loss' AND run_uuid IN "
                "(SELECT run_uuid FROM runs WHERE status = 'RUNNING') LIMIT 1",
            )
        )

    wait_until(training_logged, proc, "training logged a step")
    assert not (project / "metrics/train.json").exists()  # still training
    team.restart_postgres(stack)
    out, _ = proc.communicate(timeout=600)
    if proc.returncode != 0:  # allowed: one clear line, and the next `dvc repro` finishes the run
        errors = [line for line in out.splitlines() if line.startswith(("ERROR", "error"))]
        assert any("MLflow" in line for line in errors), out[-3000:]
        run_in(project, stack, "dvc", "repro", "train")
    run_id = json.loads((project / "metrics/train.json").read_text())["mlflow_run_id"]
    assert_complete_once(mlflow.MlflowClient(stack.tracking_uri), stack, run_id)


def test_object_store_gone_while_the_model_uploads(stack, tiny_mirror, tmp_path):
    project = tiny_clone(tmp_path, tiny_mirror)
    run_in(
        project,
        stack,
        "python",
        "-m",
        "aeflow.config",
        f"trainer.max_epochs={EPOCHS}",
        "mlflow.experiment_name=faults",
    )
    run_in(project, stack, "dvc", "repro", "download")
    # Two retries of a failed request instead of MLflow's seven (minutes of backoff).
    proc = start_repro(project, stack, MLFLOW_HTTP_REQUEST_MAX_RETRIES="2")
    # The best checkpoint is published just before the model is logged: the store goes then.
    wait_until((project / "models/best.ckpt").is_file, proc, "the best checkpoint was published")
    os.kill(team.running_pid(stack.pid_file("s3"), "moto_server"), signal.SIGKILL)
    out, _ = proc.communicate(timeout=600)
    print(out[-2000:])
    assert proc.returncode != 0, out[-3000:]
    # One line naming the store the client writes to: the tracking server's artifact proxy
    # (the S3 bucket behind it is the server's setting; its log names it).
    errors = [line for line in out.splitlines() if "Nothing trained is lost" in line]
    assert len(errors) == 1 and stack.tracking_uri in errors[0], out[-3000:]
    assert "mlflow-artifacts" in errors[0], errors[0]
    assert (project / "models/best.ckpt").is_file() and (project / "metrics/train.json").is_file()

    # The store back (`aeflow team up` starts what is missing), the next run finishes the upload.
    assert team_command(stack.root, "up").returncode == 0
    run_in(project, stack, "dvc", "repro", "train")
    run_id = json.loads((project / "metrics/train.json").read_text())["mlflow_run_id"]
    assert_complete_once(mlflow.MlflowClient(stack.tracking_uri), stack, run_id)
