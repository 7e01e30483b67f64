"""`aeflow search` with two workers on the stack's PostgreSQL storage, one of them killed mid-trial:
no trial runs twice, and the killed worker's trial is marked failed and replaced."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState

from tests.conftest import make_synthetic_idx
from tests.search.conftest import tiny_search, write_search
from tests.stack.conftest import REPO, signal_group, stack_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STUDY = "stack-two-workers"
EXPERIMENT = "search-postgres"
DEADLINE_S = 600
EPOCHS = 4


def start_worker(project: Path, space: Path, log: Path, env: dict, seed: int) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "aeflow.cli", "search", str(space), "--seed", str(seed)],
            cwd=project,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a group of its own, for `frozen`
        )


def running_trial(storage: optuna.storages.BaseStorage, worker: subprocess.Popen) -> FrozenTrial | None:
    """The trial `worker` is running, if any."""
    try:
        trials = optuna.load_study(study_name=STUDY, storage=storage).get_trials(states=(TrialState.RUNNING,))
    except KeyError:  # the study is not created yet
        return None
    return next((t for t in trials if f"-{worker.pid}-" in t.user_attrs.get("worker", "")), None)


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
    space = write_search(
        tmp_path,
        tiny_search(data, study=STUDY, n_trials=3, budget={"epochs": EPOCHS}, base=base),
        f"{STUDY}.yaml",
    )
    env = stack_env(stack, OMP_NUM_THREADS="1")
    storage = optuna.storages.RDBStorage(stack.database_url("optuna"))
    workers = [start_worker(tmp_path, space, tmp_path / f"worker{i}.log", env, seed=i) for i in range(2)]
    # The workers run in slices of 20 ms and are looked at stopped. One is killed after a trial's
    # first epoch and before its last while the other runs a trial too, so that the other comes
    # back for a claim and finds the dead worker's trial. A worker mid-trial while the other runs
    # none stays stopped until the other starts one, however the two are scheduled.
    try:
        deadline = time.monotonic() + DEADLINE_S
        while True:
            for i, worker in enumerate(workers):
                assert worker.poll() is None, (tmp_path / f"worker{i}.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (
                "no trial reached its second epoch while the other worker ran one"
            )
            for worker in workers:
                signal_group(worker.pid, signal.SIGSTOP)
            running = [running_trial(storage, worker) for worker in workers]
            mid = [t is not None and 1 <= len(t.intermediate_values) < EPOCHS for t in running]
            caught = next((i for i in (0, 1) if mid[i] and running[1 - i] is not None), None)
            if caught is not None:
                break
            for i, worker in enumerate(workers):
                if not mid[i]:
                    signal_group(worker.pid, signal.SIGCONT)
            time.sleep(0.02)
        victim, survivor, killed = workers[caught], workers[1 - caught], running[caught].number
        signal_group(victim.pid, signal.SIGKILL)
        signal_group(survivor.pid, signal.SIGCONT)
        victim.wait()
        survivor.wait(timeout=DEADLINE_S)
        log = tmp_path / f"worker{1 - caught}.log"
        assert survivor.returncode == 0, log.read_text()[-3000:]
    finally:  # none left stopped or running after a failure
        for worker in workers:
            if worker.poll() is None:
                signal_group(worker.pid, signal.SIGKILL)

    trials = optuna.load_study(study_name=STUDY, storage=storage).get_trials()
    states = {t.number: t.state for t in trials}
    assert states[killed] == TrialState.FAIL, states
    assert list(states.values()).count(TrialState.COMPLETE) == 3, states
    assert len(trials) == 4, states  # the failed trial replaced, no other extra

    client = mlflow.MlflowClient(stack.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
    per_trial: dict[int, list] = {}
    for run in runs:
        if "aeflow.search.trial" in run.data.tags:
            per_trial.setdefault(int(run.data.tags["aeflow.search.trial"]), []).append(run.info.status)
    # Each trial ran once (one MLflow run), the killed one marked FAILED.
    assert per_trial == {n: ["FAILED" if n == killed else "FINISHED"] for n in states}, per_trial
