"""A study's parent MLflow run (search space, best trial, Optuna's plots) and its best-config preset."""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # noqa: E402 (after the backend is chosen)
import mlflow  # noqa: E402
import optuna  # noqa: E402
import yaml  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from aeflow.config.params import CONF_DIR, compose, to_container  # noqa: E402
from aeflow.config.schema import validate  # noqa: E402
from aeflow.io import write_json, write_text  # noqa: E402
from aeflow.search.space import SearchSpaceError, SearchSpec  # noqa: E402
from aeflow.tracking import runs as tracking  # noqa: E402

log = logging.getLogger(__name__)

PARENT_ATTR = "mlflow_parent_run_id"
PLOTS: dict[str, Callable[[optuna.Study], Any]] = {
    "optimization_history": optuna.visualization.matplotlib.plot_optimization_history,
    "param_importances": optuna.visualization.matplotlib.plot_param_importances,
    "parallel_coordinate": optuna.visualization.matplotlib.plot_parallel_coordinate,
}


def open_parent_run(
    study: optuna.Study,
    spec: SearchSpec,
    client: mlflow.MlflowClient,
    uri: str,
    experiment_name: str,
    storage: str,
) -> str:
    """The study's parent run: created by the first worker (call with the claim lock held), reopened after."""
    run_id = study.user_attrs.get(PARENT_ATTR)
    if run_id:
        tracking.retry_locked(client.update_run, run_id, status="RUNNING")
        return run_id
    with tracking.store_lock(uri):
        experiment_id = tracking.ensure_experiment(client, experiment_name, uri)
    tags = {
        "mlflow.runName": f"search-{spec.study}",
        "aeflow.search.study": spec.study,
        "aeflow.search.storage": storage,
        "git_commit": tracking.git_commit(),
    }
    run_id = tracking.retry_locked(client.create_run, experiment_id, tags=tags).info.run_id
    params = {f"space.{d.key}": d.source for d in spec.dimensions}
    params.update(
        {
            "objective.metric": spec.metric,
            "objective.direction": spec.direction,
            "budget.epochs": spec.epochs,
            "base": " ".join(spec.base),
            "sampler": json.dumps(dict(spec.sampler), sort_keys=True),
        }
    )
    tracking.retry_locked(
        client.log_batch, run_id, params=[mlflow.entities.Param(k, str(v)) for k, v in params.items()]
    )
    tracking.retry_locked(client.log_text, run_id, spec.path.read_text(), "search_space.yaml")
    study.set_user_attr(PARENT_ATTR, run_id)
    return run_id


def summarize(
    study: optuna.Study,
    spec: SearchSpec,
    folder: Path,
    client: mlflow.MlflowClient,
    parent_run_id: str,
    conf_dir: str | Path = CONF_DIR,
) -> Path | None:
    """Log the best trial and Optuna's plots to the parent run and write the preset; its path, or None.

    Called by the worker that sees the study's last trial finish.
    """
    trials = study.get_trials(deepcopy=False)
    counts = {
        state.name.lower(): sum(t.state == state for t in trials)
        for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    }
    tracking.retry_locked(
        client.log_batch,
        parent_run_id,
        metrics=[
            mlflow.entities.Metric(f"trials_{k}", v, mlflow.utils.time.get_current_time_millis(), 0)
            for k, v in counts.items()
        ],
    )
    if not counts["complete"]:
        log.warning("Study %s has no complete trial (%s): no best config, no preset", spec.study, counts)
        tracking.retry_locked(client.set_terminated, parent_run_id, "FAILED")
        return None
    best = study.best_trial
    preset = write_preset(spec, best, counts, conf_dir)
    summary = {
        "trial": best.number,
        "value": best.value,
        "metric": spec.metric,
        "params": best.params,
        "overrides": spec.overrides(best.params),
        "preset": str(preset),
        **counts,
    }
    write_json(folder / "best.json", summary)
    study.trials_dataframe().to_csv(folder / "trials.csv", index=False)
    for name, plot in PLOTS.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                warnings.simplefilter("ignore", UserWarning)  # "too few trials" notes on small studies
                axes = plot(study)
        except (ValueError, RuntimeError) as exc:  # e.g. importances need two complete trials
            log.warning("Optuna plot %s skipped: %s", name, exc)
            continue
        figure = getattr(axes, "figure", None) or axes.flat[0].figure
        (folder / "plots").mkdir(parents=True, exist_ok=True)
        figure.savefig(folder / "plots" / f"{name}.png", dpi=100, bbox_inches="tight")
        plt.close(figure)
    tracking.retry_locked(client.log_metric, parent_run_id, "best_value", best.value)
    tags = {"best_trial": str(best.number), **{f"best.{k}": str(v) for k, v in best.params.items()}}
    for key, value in tags.items():
        tracking.retry_locked(client.set_tag, parent_run_id, key, value)
    for path in (folder / "best.json", folder / "trials.csv", preset):
        tracking.retry_locked(client.log_artifact, parent_run_id, str(path))
    if (folder / "plots").is_dir():
        tracking.retry_locked(client.log_artifacts, parent_run_id, str(folder / "plots"), "plots")
    tracking.retry_locked(client.set_terminated, parent_run_id, "FINISHED")
    return preset


def _default_experiment(conf_dir: Path) -> str | None:
    for entry in OmegaConf.load(conf_dir / "config.yaml").get("defaults", []):
        if isinstance(entry, dict) or OmegaConf.is_dict(entry):
            if "experiment" in entry:
                return entry["experiment"]
    return None


def preset_text(
    spec: SearchSpec, params: dict[str, Any], conf_dir: str | Path = CONF_DIR, header: str = ""
) -> str:
    """A `conf/experiment/` preset equal to the base experiment + base overrides + budget + `params`.

    Group choices (`optimizer=adam`) become `override /group` entries of its
    defaults list; every other override becomes a value after `_self_`.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    conf_dir = Path(conf_dir)
    experiment = _default_experiment(conf_dir)
    overrides: list[dict[str, Any]] = []
    values = OmegaConf.create({})
    for override in OverridesParser.create().parse_overrides(spec.overrides(params)):
        key = override.key_or_group
        if override.is_delete() or override.is_sweep_override():
            raise SearchSpaceError(
                f"{override.input_line}: a preset cannot delete keys or sweep; "
                "use key=value overrides in `base`"
            )
        if key == "experiment":
            experiment = override.value()
        elif (conf_dir / key).is_dir():
            overrides.append({f"override /{key}": override.value()})
        else:
            OmegaConf.update(values, key, override.value(), force_add=True)
    defaults = [*([experiment] if experiment else []), *overrides, "_self_"]
    body = yaml.safe_dump({"defaults": defaults}, sort_keys=False) + OmegaConf.to_yaml(values)
    return f"# @package _global_\n{header}{body}"


def write_preset(
    spec: SearchSpec, best: optuna.trial.FrozenTrial, counts: dict[str, int], conf_dir: str | Path = CONF_DIR
) -> Path:
    """Write `conf/experiment/<study>_best.yaml`; check it composes to exactly the best trial's config."""
    name = spec.preset_name
    header = (
        f"# The best trial ({best.number}) of the Optuna study {spec.study!r} ({spec.path.name}):\n"
        f"# {spec.metric} {best.value:.6g} after at most {spec.epochs} epochs; "
        f"{sum(counts.values())} trials, {counts['pruned']} pruned, {counts['fail']} failed.\n"
        f"# Written by `aeflow search`. Retrain through the pipeline:\n"
        f"#   dvc exp run -S experiment={name}\n"
    )
    path = Path(conf_dir) / "experiment" / f"{name}.yaml"
    write_text(path, preset_text(spec, best.params, conf_dir, header))
    expected = compose(spec.overrides(best.params), conf_dir=conf_dir)
    composed = compose([f"experiment={name}"], conf_dir=conf_dir)
    validate(composed)
    if to_container(composed) != to_container(expected):
        raise SearchSpaceError(
            f"{path}: composes to a different config than trial {best.number}'s "
            f"({' '.join(spec.overrides(best.params))}); report this with the file"
        )
    log.info("Best config (trial %d, %s %.6g) written to %s", best.number, spec.metric, best.value, path)
    return path
