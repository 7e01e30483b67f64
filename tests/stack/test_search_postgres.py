"""`aeflow search` with two workers on the stack's PostgreSQL storage, one of them killed mid-trial:
no trial runs twice, and the killed worker's trial is marked failed and replaced."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import optuna
import pytest
from optuna.trial import TrialState

from tests.conftest import make_synthetic_idx
from tests.search.conftest import tiny_search, write_search
from tests.stack.conftest import REPO, stack_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STUDY = "stack-two-workers"
EXPERIMENT = "search-postgres"
DEADLINE_S = 600


def start_worker(project: Path, space: Path, log: Path, env: dict, seed: int) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "aeflow.cli", "search", str(space), "--seed", str(seed)],
            cwd=project,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def test_two_workers_on_postgres_run_each_trial_once_and_replace_a_killed_workers_trial(stack, tmp_path):
    shutil.copytree(REPO / "conf", tmp_path / "conf")
    data = tmp_path / "data"
    files = make_synthetic_idx(data, n_train=1200, n_test=40)
    base = [
        *(o for o in tiny_search(data)["base"] if not o.startswith("data.batch_size=")),
        "data.batch_size=16",
        "data.val_size=20",
        f"mlflow.experiment_name={EXPERIMENT}",
        *(f"data.files.{k}.md5={v['md5']}" for k, v in files.items()),
    ]
    # Epochs of about a second, so that a trial can be caught between its first and last epoch.
    space = write_search(
        tmp_path, tiny_search(data, study=STUDY, n_trials=3, budget={"epochs": 4}, base=base), f"{STUDY}.yaml"
    )
    env = stack_env(stack, OMP_NUM_THREADS="1")
    storage = optuna.storages.RDBStorage(stack.database_url("optuna"))
    workers = [start_worker(tmp_path, space, tmp_path / f"worker{i}.log", env, seed=i) for i in range(2)]
    deadline = time.monotonic() + DEADLINE_S
    victim = workers[0]
    while True:  # until a trial of worker 0 has finished an epoch but not its last
        assert victim.poll() is None, (tmp_path / "worker0.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "no trial of worker 0 reached its second epoch"
        try:
            trials = optuna.load_study(study_name=STUDY, storage=storage).get_trials()
        except KeyError:  # the study is not created yet
            trials = []
        mine = [
            t
            for t in trials
            if t.state == TrialState.RUNNING
            and f"-{victim.pid}-" in t.user_attrs.get("worker", "")
            and 1 <= len(t.intermediate_values) < 3
        ]
        if mine:
            break
        time.sleep(0.05)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    killed = mine[0].number

    survivor = workers[1]
    survivor.wait(timeout=DEADLINE_S)
    assert survivor.returncode == 0, (tmp_path / "worker1.log").read_text()[-3000:]

    trials = optuna.load_study(study_name=STUDY, storage=storage).get_trials()
    states = {t.number: t.state for t in trials}
    assert states[killed] == TrialState.FAIL, states
    assert sorted(s for s in states.values() if s == TrialState.COMPLETE).count(TrialState.COMPLETE) == 3
    assert len(trials) == 4, states  # the failed trial replaced, no other extra

    client = mlflow.MlflowClient(stack.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
    per_trial: dict[int, list] = {}
    for run in runs:
        if "aeflow.search.trial" in run.data.tags:
            per_trial.setdefault(int(run.data.tags["aeflow.search.trial"]), []).append(run.info.status)
    # Each trial ran once (one MLflow run), the killed one marked FAILED.
    assert per_trial == {n: ["FAILED" if n == killed else "FINISHED"] for n in states}, per_trial
