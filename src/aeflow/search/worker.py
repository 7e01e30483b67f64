"""One worker's loop over a study: claim a trial, train it, repeat until the study has its trials.

Called by `aeflow.search.run.run_search` once the search file has been checked.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import mlflow
import optuna
from omegaconf import DictConfig
from optuna.trial import TrialState

from aeflow.config.params import CONF_DIR
from aeflow.errors import TrainingError
from aeflow.numerics import modes as numerics
from aeflow.search import results
from aeflow.search.space import SearchSpaceError, SearchSpec
from aeflow.search.storage import (
    SEARCH_ROOT,
    ClaimLock,
    Worker,
    describe,
    fail_interrupted,
    open_storage,
)
from aeflow.tracking import runs as tracking

log = logging.getLogger(__name__)

# Trials that count towards n_trials: failed ones are replaced.
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
FINGERPRINT_ATTR = "search_space"
# How many trials the study had when its parent run and preset were last written from them.
SUMMARIZED_ATTR = "summarized_trials"


@dataclass
class SearchResult:
    study: optuna.Study
    preset: Path | None  # None while other workers still run trials, or with no complete trial


def work(
    spec: SearchSpec,
    base: DictConfig,
    storage_url: str | None = None,
    root: Path = SEARCH_ROOT,
    conf_dir: str | Path = CONF_DIR,
    seed: int | None = None,
) -> SearchResult:
    """Run trials of `spec`'s study until it has `spec.n_trials` complete or pruned ones.

    `base` is the composed base config (`SearchSpec.check`): where runs are tracked, and the
    numerics mode every trial of this process trains in.
    """
    numerics.apply(base.performance.numerics, base.performance.num_threads)  # before torch is imported
    from aeflow.search.objective import make_objective

    folder = root / spec.study
    storage = open_storage(spec.study, storage_url, root)
    shown = describe(storage, spec.study, storage_url, root)
    study = optuna.create_study(
        storage=storage,
        study_name=spec.study,
        direction=spec.direction,
        sampler=spec.make_sampler(seed),
        pruner=spec.make_pruner(),
        load_if_exists=True,
    )
    uri = tracking.store_uri(tracking.tracking_uri(base.mlflow.tracking_uri))
    tracking.preflight(uri)
    with tracking.store_lock(uri):
        client = mlflow.MlflowClient(uri)
    claim, worker = ClaimLock(folder), Worker(folder)
    try:
        with claim.held():
            _check_same_space(study, spec, shown)
            parent = results.open_parent_run(study, spec, client, uri, base.mlflow.experiment_name, shown)
        log.info(
            "Study %s (storage %s, parent MLflow run %s): worker %s", spec.study, shown, parent, worker.id
        )
        objective = make_objective(spec, folder, worker, parent, on_started=claim.release, conf_dir=conf_dir)
        ran: list[optuna.trial.FrozenTrial] = []  # this worker's finished trials
        while True:
            claim.acquire()
            try:
                for trial in fail_interrupted(study, storage, folder):
                    _mark_run_failed(client, trial)
                if len(study.get_trials(deepcopy=False, states=COUNTED)) >= spec.n_trials:
                    break
                # Optuna creates the trial (ask) under the claim lock; the objective releases it.
                study.optimize(
                    objective,
                    n_trials=1,
                    catch=(TrainingError,),
                    callbacks=[lambda _study, trial: ran.append(trial)],
                )
            finally:
                claim.release()
            failures = sum(t.state == TrialState.FAIL for t in ran)
            if failures >= spec.n_trials:
                raise TrainingError(
                    f"{failures} trials of study {spec.study} failed (diverged or logged "
                    "nothing); narrow the search space"
                )
        with claim.held():
            if study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                log.info(
                    "Other workers are still running trials of %s; the last one writes the preset", spec.study
                )
                return SearchResult(study, None)
            # Every worker that finds no trial running gets here, one at a time: two whose last
            # trials end close together both do. The study records which trials its summary
            # covers (under the claim lock), so exactly one of them summarises them.
            finished = len(study.get_trials(deepcopy=False))
            if study.user_attrs.get(SUMMARIZED_ATTR) == finished:
                log.info(
                    "The %d trials of %s are summarised already, in MLflow run %s",
                    finished,
                    spec.study,
                    parent,
                )
                _close_parent(client, parent, study)
                return SearchResult(study, None)
            preset = results.summarize(study, spec, folder, client, parent, conf_dir)
            study.set_user_attr(SUMMARIZED_ATTR, finished)
            return SearchResult(study, preset)
    finally:
        claim.release()
        worker.close()


def _check_same_space(study: optuna.Study, spec: SearchSpec, storage: str) -> None:
    recorded = study.user_attrs.get(FINGERPRINT_ATTR)
    if recorded is None:
        study.set_user_attr(FINGERPRINT_ATTR, spec.fingerprint())
    elif recorded != spec.fingerprint():
        raise SearchSpaceError(
            f"study {spec.study!r} in {storage} was started with another search space, "
            "objective, base or budget; resume it with the same file, or give this "
            "search a new name (--study NAME)"
        )


def _close_parent(client: mlflow.MlflowClient, parent: str, study: optuna.Study) -> None:
    """End the parent run this worker reopened, as the summary of the same trials ended it."""
    if tracking.retry_locked(client.get_run, parent).info.status == "RUNNING":
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        tracking.retry_locked(client.set_terminated, parent, "FINISHED" if complete else "FAILED")


def _mark_run_failed(client: mlflow.MlflowClient, trial: optuna.trial.FrozenTrial) -> None:
    from aeflow.search.objective import RUN_ATTR

    run_id = trial.user_attrs.get(RUN_ATTR)
    if run_id:
        tracking.retry_locked(client.set_terminated, run_id, "FAILED")
