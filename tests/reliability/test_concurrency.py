"""Concurrent runs writing to one SQLite store: every run ends FINISHED with all it logged.

The store does not exist when the runs start, so they also race to create
its schema (serialised by `tracking.store_lock`). Writers wait on SQLite's
lock (60 s busy timeout) instead of failing; an error that outlasts it fails
the stage (the test would see a non-zero exit), it is never swallowed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import mlflow
import pytest

from tests.helpers import FAST
from tests.reliability.conftest import (
    TINY,
    copy_project,
    dvc,
    logged_models,
    run_stage,
    stage_env,
    store_runs,
    write_params,
)

N_RUNS = 4


SCHEMA_CREATED = "Creating initial MLflow database tables"  # MLflow logs it when it creates the schema

# One process of the dataset test: it logs the same three datasets as the other processes, to
# runs of its own (a new digest each round). A barrier after MLflow's lookup of the experiment's
# datasets (SQLAlchemy's public event API) makes every process of a round find no row before any
# inserts one: all but one then hit the unique row, every round, whatever the machine's timing.
SAME_DATASETS = """
import logging, os, sys, time
from pathlib import Path
import mlflow
from mlflow.entities import Dataset, DatasetInput
from sqlalchemy import event
from sqlalchemy.engine import Engine
from aeflow.tracking import runs

uri, barrier, processes, rounds = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
round_, met = 0, set()


@event.listens_for(Engine, "after_cursor_execute")
def meet_after_lookup(conn, cursor, statement, *args):
    lookup = statement.lstrip().upper().startswith("SELECT") and "FROM datasets" in statement
    if round_ in met or not lookup:
        return
    met.add(round_)  # a retry's lookup goes on: the others may be done with this round
    (barrier / f"{round_}.{os.getpid()}").touch()
    deadline = time.monotonic() + 600  # the slowest process may still be importing MLflow
    while len(list(barrier.glob(f"{round_}.*"))) < processes:
        assert time.monotonic() < deadline, "the other processes never looked their datasets up"
        time.sleep(0.05)


client = mlflow.MlflowClient(runs.store_uri(uri))
experiment = client.get_experiment_by_name("datasets").experiment_id
for round_ in range(rounds):
    run_id = client.create_run(experiment).info.run_id
    splits = [Dataset(f"mnist-{s}", f"d{round_}", "local", "{}") for s in ("train", "val", "test")]
    runs.log_inputs(client, run_id, [DatasetInput(d) for d in splits])
"""


# The stages that write to the store, in the pipeline's order.
STAGES = ("train", "evaluate", "package")


@pytest.mark.slow
def test_four_processes_log_to_one_new_sqlite_store(tiny_data, tmp_path):
    folder, files = tiny_data
    db = tmp_path / "shared" / "mlflow.db"
    uri = f"sqlite:///{db}"
    procs = []
    for seed in range(N_RUNS):
        project = tmp_path / f"run{seed}"
        write_params(project, [*TINY, f"seed={seed}"], folder, files)
        # Evaluate reads the baselines stage's files, which depend on the data alone (the same for
        # all four) and log nothing: computed once, beforehand.
        if seed == 0:
            baselines = run_stage(project, "baselines")
            assert baselines.returncode == 0, baselines.stderr[-3000:]
        else:
            shutil.copytree(tmp_path / "run0" / "baselines", project / "baselines")
        # Each process records when it started and ended (seconds since the epoch).
        cmd = (
            "date +%s.%N > started && "
            + " && ".join(f"{sys.executable} -m aeflow.stages.{s}" for s in STAGES)
            + " && date +%s.%N > ended"
        )
        procs.append(
            (
                project,
                subprocess.Popen(
                    ["bash", "-c", cmd],
                    cwd=project,
                    text=True,
                    env=stage_env(MLFLOW_TRACKING_URI=uri),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                ),
            )
        )
    outputs = []
    for _, proc in procs:
        out, _ = proc.communicate(timeout=900)
        assert proc.returncode == 0, out[-3000:]
        outputs.append(out)

    # They ran at the same time: every process started before any of them ended...
    spans = [tuple(float((p / f).read_text()) for f in ("started", "ended")) for p, _ in procs]
    assert max(s for s, _ in spans) < min(e for _, e in spans), spans
    # ...and one of them, alone, created the new store's schema.
    assert sum(SCHEMA_CREATED in out for out in outputs) == 1, [out[-2000:] for out in outputs]

    runs = store_runs(db)
    assert len(runs) == N_RUNS
    # Runs open in the store at the same time (MLflow's own start and end times, ms).
    open_at_once = max(
        sum(r.info.start_time <= t.info.start_time < r.info.end_time for r in runs) for t in runs
    )
    assert open_at_once >= 2, [(r.info.start_time, r.info.end_time) for r in runs]
    client = mlflow.MlflowClient(uri)
    for project, _ in procs:
        run_id = json.loads((project / "models/run.json").read_text())["run_id"]
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"
        assert len(client.get_metric_history(run_id, "val/loss")) == 2  # one per epoch
        assert {"best_val_loss", "train_time_s", "test/sq_err_per_image"} <= set(run.data.metrics)
        assert logged_models(client, run_id) == {"model"}
    assert len({r.data.params["seed"] for r in runs}) == N_RUNS


@pytest.mark.slow
def test_four_queued_experiments_two_at_a_time(downloaded_project, mnist_slice, tmp_path):
    project = copy_project(downloaded_project, tmp_path / "project")
    # `dvc exp run -S` recomposes params.yaml from conf/: every override goes on the command line.
    overrides = [a for o in [*mnist_slice, *FAST] for a in ("-S", o)]
    for seed in range(N_RUNS):
        dvc(project, "exp", "run", "--queue", "-n", f"seed{seed}", "-S", f"seed={seed}", *overrides, "train")
    dvc(project, "queue", "start", "-j", "2")
    deadline = time.monotonic() + 900
    try:
        while True:
            status = dvc(project, "queue", "status")
            if "Queued" not in status and "Running" not in status:
                break
            assert time.monotonic() < deadline, f"queue still busy after 900 s:\n{status}"
            time.sleep(3)
    finally:
        dvc(project, "queue", "stop", check=False)
    assert status.count("Success") == N_RUNS, status

    # Queued experiments ran in .dvc/tmp/exps/...; their runs all landed in the project's store.
    runs = store_runs(project / "mlflow.db")
    assert sorted(r.data.tags.get("dvc_exp_name", "") for r in runs) == [f"seed{s}" for s in range(N_RUNS)]
    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    for run in runs:
        assert run.info.status == "FINISHED"
        assert {"best_val_loss", "train_time_s", "train/loss", "val/loss"} <= set(run.data.metrics)
        # The target was `train`: the MLflow model is the package stage's, so none was logged yet.
        assert logged_models(client, run.info.run_id) == set()


def test_processes_logging_the_same_datasets_at_once_all_record_them(tmp_path):
    # Runs of one sweep log the same data: MLflow's check-then-insert of the
    # dataset row races between processes (it failed runs of a two-worker search).
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.MlflowClient(uri).create_experiment("datasets")
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    rounds = 3
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SAME_DATASETS, uri, str(barrier), str(N_RUNS), str(rounds)],
            env=stage_env(),
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for _ in range(N_RUNS)
    ]
    outputs = []
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=900)
            assert proc.returncode == 0, out[-3000:]
            outputs.append(out)
    finally:  # one failed: the others would wait at the barrier for it
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    # The race happened and the retry resolved it: in every round all but one process retried.
    retries = sum(out.count("MLflow store write did not go through") for out in outputs)
    assert retries >= rounds * (N_RUNS - 1), outputs
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("datasets").experiment_id])
    assert len(runs) == N_RUNS * rounds
    # Each run is linked to its round's three datasets, shared with the other processes' runs.
    splits = ["mnist-test", "mnist-train", "mnist-val"]
    for run in runs:
        assert sorted(d.dataset.name for d in run.inputs.dataset_inputs) == splits
        assert len({d.dataset.digest for d in run.inputs.dataset_inputs}) == 1
