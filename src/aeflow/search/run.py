"""`aeflow search conf/search/<name>.yaml`: one worker of an Optuna study over the project's config.

Start it again with the same study name to resume (finished trials stay,
interrupted ones are marked FAILED); start several at once, on one machine
with the default journal file or on several machines with an RDB storage, and
they share the study's trials. The worker that sees the last trial finish
logs the best trial and the plots to the study's parent MLflow run and writes
the preset `conf/experiment/<study>_best.yaml`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import mlflow
import optuna
from optuna.trial import TrialState

from aeflow.config.params import CONF_DIR
from aeflow.errors import AeflowError, TrainingError
from aeflow.search import results
from aeflow.search.objective import RUN_ATTR, make_objective
from aeflow.search.space import SearchSpaceError, SearchSpec, load_spec, with_overrides
from aeflow.search.storage import (
    SEARCH_ROOT,
    STORAGE_ENV,
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


@dataclass
class SearchResult:
    study: optuna.Study
    preset: Path | None  # None while other workers still run trials, or with no complete trial


def run_search(
    spec: SearchSpec,
    storage_url: str | None = None,
    root: Path = SEARCH_ROOT,
    conf_dir: str | Path = CONF_DIR,
    seed: int | None = None,
) -> SearchResult:
    """Run trials of `spec`'s study until it has `spec.n_trials` complete or pruned ones."""
    base = spec.check(conf_dir)  # before any storage, run or training
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
            return SearchResult(study, results.summarize(study, spec, folder, client, parent, conf_dir))
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


def _mark_run_failed(client: mlflow.MlflowClient, trial: optuna.trial.FrozenTrial) -> None:
    run_id = trial.user_attrs.get(RUN_ATTR)
    if run_id:
        tracking.retry_locked(client.set_terminated, run_id, "FAILED")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="aeflow search", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("space", help="search file, e.g. conf/search/hinton2006.yaml")
    parser.add_argument("--study", help="study name (default: the file's `study`, else its name)")
    parser.add_argument("--n-trials", type=int, help="complete + pruned trials the study should reach")
    parser.add_argument(
        "--storage",
        help=f"RDB URL (e.g. postgresql://...) or journal file; default: "
        f"${STORAGE_ENV}, else {SEARCH_ROOT}/<study>.journal",
    )
    parser.add_argument("--seed", type=int, help="TPE sampler seed (give each worker its own)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    optuna.logging.enable_propagation()
    optuna.logging.disable_default_handler()
    try:
        spec = with_overrides(load_spec(args.space), study=args.study, n_trials=args.n_trials)
        result = run_search(spec, args.storage, seed=args.seed)
    except AeflowError as exc:
        sys.exit(f"error: {exc}")
    if result.preset is not None:
        best = result.study.best_trial
        name = results.preset_name(spec.study)
        sys.stdout.write(
            f"best trial {best.number}: {spec.metric} {best.value:.6g}\n"
            f"preset: {result.preset} (dvc exp run -S experiment={name})\n"
        )


if __name__ == "__main__":
    main()
