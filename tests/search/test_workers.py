"""Several `aeflow search` processes on one journal storage, and a worker killed mid-trial.

Real worker processes on a slice of real MNIST; the study is read back from
the journal file with Optuna and the runs from the MLflow store.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import optuna
import pytest
from optuna.trial import TrialState

from tests.search import claim_race
from tests.search.conftest import tiny_search, worker_env, write_search

DEADLINE_S = 600


def start_worker(
    project: Path, space: Path, log: Path, seed: int, race: dict[str, str] | None = None
) -> subprocess.Popen:
    """A real `aeflow search` process; with `race` (claim_race's settings) one forced into the claim race."""
    command = [claim_race.__file__] if race else ["-m", "aeflow.cli"]
    with open(log, "w") as out:
        return subprocess.Popen(
            [sys.executable, *command, "search", str(space), "--seed", str(seed)],
            cwd=project,
            env={**worker_env(project), **(race or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def finish(proc: subprocess.Popen, log: Path) -> str:
    try:
        proc.wait(timeout=DEADLINE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"worker still running after {DEADLINE_S} s:\n{log.read_text()[-3000:]}")
    out = log.read_text()
    assert proc.returncode == 0, out[-3000:]
    return out


def journal_study(project: Path, name: str = "tiny") -> optuna.Study:
    backend = optuna.storages.journal.JournalFileBackend(str(project / "searches" / f"{name}.journal"))
    return optuna.load_study(study_name=name, storage=optuna.storages.JournalStorage(backend))


def parent_and_child_runs(project: Path) -> tuple[mlflow.entities.Run, dict[int, list]]:
    """The study's one parent run (FINISHED) and its child runs by trial number."""
    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("autoencoder").experiment_id])
    children: dict[int, list] = {}
    for run in runs:
        if "mlflow.parentRunId" in run.data.tags:
            children.setdefault(int(run.data.tags["aeflow.search.trial"]), []).append(run)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED", [r.info for r in parents]
    assert all(
        r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for rs in children.values() for r in rs
    )
    return parents[0], children


@pytest.mark.slow
@pytest.mark.integration
def test_two_workers_share_one_study_and_run_each_trial_once(project, mnist_raw, tmp_path):
    # Both workers ask for the claim at once before every trial (claim_race), so each decision
    # is contended. An odd number of trials: at the last one both see two trials and one to go,
    # and only the claim lock keeps them from starting one each. Both then check for running
    # trials only once every trial has finished, so both find none: one of them summarises.
    space = write_search(project, tiny_search(mnist_raw, n_trials=3))
    race_dir = tmp_path / "race"
    race_dir.mkdir()
    race = {claim_race.RACE_DIR_ENV: str(race_dir), claim_race.PARTIES_ENV: "2"}
    procs = [start_worker(project, space, tmp_path / f"worker{i}.log", seed=i, race=race) for i in range(2)]
    outputs = [finish(p, tmp_path / f"worker{i}.log") for i, p in enumerate(procs)]

    trials = journal_study(project).get_trials()
    assert [t.number for t in trials] == [0, 1, 2], [(t.number, t.user_attrs) for t in trials]
    assert all(t.state == TrialState.COMPLETE for t in trials), [t.state for t in trials]
    workers = {t.user_attrs["worker"] for t in trials}
    assert len(workers) == 2, f"one worker ran every trial: {workers}"
    parent, runs = parent_and_child_runs(project)
    assert sorted(runs) == [0, 1, 2] and all(len(r) == 1 for r in runs.values()), runs
    claims = claim_race.read_claims(race_dir)
    assert len({pid for pid, _, _ in claims}) == 2, claims
    # The second worker to claim the first trial, and the one to claim the last, waited while the
    # other held the claim and created its trial.
    contended = [c for c in claims if c[2] >= 0.9 * claim_race.HOLD_S]
    assert len(contended) >= 2, f"the workers never waited for each other's claim: {claims}"
    # Both workers reached the summary with no trial running; exactly one summarised.
    assert all(f"{p.pid}.{claim_race.SUMMARY}" in os.listdir(race_dir) for p in procs)
    assert sum("preset: " in out for out in outputs) == 1, outputs
    assert sum("summarised already" in out for out in outputs) == 1, outputs
    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    for metric in ("best_value", "trials_complete"):
        assert len(client.get_metric_history(parent.info.run_id, metric)) == 1, metric
    assert (project / "conf" / "experiment" / "tiny_best.yaml").is_file()


@pytest.mark.slow
@pytest.mark.integration
def test_worker_killed_mid_trial_then_restarted_completes_the_study(project, mnist_raw, tmp_path):
    space = write_search(
        project,
        tiny_search(
            mnist_raw,
            n_trials=3,
            budget={"epochs": 3},
            base=[*tiny_search(mnist_raw)["base"], "trainer.limit_train_batches=150"],
        ),
    )
    worker = start_worker(project, space, tmp_path / "killed.log", seed=0)
    deadline = time.monotonic() + DEADLINE_S
    study = None
    while True:  # until trial 0 is done and trial 1 has finished an epoch but not the last
        assert worker.poll() is None, (
            f"worker ended before it could be killed:\n{(tmp_path / 'killed.log').read_text()}"
        )
        assert time.monotonic() < deadline, "no trial reached its second epoch"
        if (project / "searches" / "tiny.journal").is_file():
            study = study or journal_study(project)
            trials = study.get_trials()
            if len(trials) == 2 and trials[1].intermediate_values and trials[0].state == TrialState.COMPLETE:
                break
        time.sleep(0.05)
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    finished = trials[0]
    killed = study.get_trials()[1]
    assert killed.state == TrialState.RUNNING and len(killed.intermediate_values) < 3

    finish(start_worker(project, space, tmp_path / "restarted.log", seed=1), tmp_path / "restarted.log")

    trials = journal_study(project).get_trials()
    assert [t.state for t in trials] == [
        TrialState.COMPLETE,
        TrialState.FAIL,
        TrialState.COMPLETE,
        TrialState.COMPLETE,
    ]
    assert trials[0].value == finished.value and trials[0].params == finished.params  # nothing finished lost
    _, runs = parent_and_child_runs(project)
    assert [runs[n][0].info.status for n in range(4)] == ["FINISHED", "FAILED", "FINISHED", "FINISHED"]
    assert (project / "conf" / "experiment" / "tiny_best.yaml").is_file()
