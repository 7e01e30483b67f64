"""`aeflow promote RUN_ID`: register a run's model, and make it the champion only on evidence.

Serving follows one alias (`models:/<name>@champion`). A run replaces the
champion only when, on the chosen test metric, it beats the champion by more
than the margin, and both were measured on the same test data (the run tag
`data_dvc_md5`) in the same numerics class (`aeflow.numerics.mode`; absent
means `native`). The margin is the larger of a stated one (`--margin`) and the
run-to-run seed spread where the store records it: the sample standard
deviation of the metric over the finished runs whose parameters equal the
candidate's except the seed (at least two of them).

The run's model is registered either way; the decision and its evidence are
tags on the new model version (`aeflow.promote.*`). Exit status: 0 promoted,
1 refused, 2 not comparable or not found (the message says why).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
from dataclasses import dataclass
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException

from aeflow.errors import AeflowError
from aeflow.tracking import registry
from aeflow.tracking import runs as tracking

log = logging.getLogger(__name__)

EXIT_REFUSED, EXIT_ERROR = 1, 2
DEFAULT_METRIC = "test/sq_err_per_image"
DEFAULT_ALIAS = "champion"
DATA_TAG = "data_dvc_md5"
NUMERICS_TAG = "aeflow.numerics.mode"
NUMERICS_DEFAULT = "native"
TAG_PREFIX = "aeflow.promote."
# Parameters that say where a run wrote, not what it computed: repeats of one config differ in them.
NOT_CONFIG = ("seed", "paths.", "mlflow.", "data.source.")


class PromoteError(AeflowError):
    """The run cannot be compared with the champion (the message says why)."""


@dataclass(frozen=True)
class Entry:
    """One side of the comparison: a run's metric, data and numerics class."""

    run_id: str
    value: float
    data: str | None
    numerics: str

    def line(self, label: str, metric: str) -> str:
        where = f"data {self.data}, numerics {self.numerics}"
        return f"{label:<10} run {self.run_id}: {metric} = {self.value:.6g} ({where})"


@dataclass(frozen=True)
class Decision:
    promoted: bool
    reason: str
    candidate: Entry
    champion: Entry | None
    champion_version: str | None
    margin: float
    margin_source: str
    version: str

    def tags(self, metric: str, alias: str, direction: str) -> dict[str, str]:
        tags = {
            "decision": "promoted" if self.promoted else "refused",
            "reason": self.reason,
            "alias": alias,
            "metric": metric,
            "direction": direction,
            "value": repr(self.candidate.value),
            "margin": repr(self.margin),
            "margin_source": self.margin_source,
            "data_dvc_md5": str(self.candidate.data),
            "numerics": self.candidate.numerics,
        }
        if self.champion is not None:
            tags.update(
                champion_run=self.champion.run_id,
                champion_version=str(self.champion_version),
                champion_value=repr(self.champion.value),
            )
        return {TAG_PREFIX + k: v for k, v in tags.items()}


def entry(client: mlflow.MlflowClient, run_id: str, metric: str) -> Entry:
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        raise PromoteError(f"run {run_id} not found in {tracking.redact_uri(client.tracking_uri)}") from exc
    if metric not in run.data.metrics:
        known = ", ".join(sorted(k for k in run.data.metrics if k.startswith("test/"))[:8])
        raise PromoteError(f"run {run_id} has no metric {metric!r} (its test metrics include: {known})")
    tags = run.data.tags
    return Entry(
        run_id, run.data.metrics[metric], tags.get(DATA_TAG), tags.get(NUMERICS_TAG, NUMERICS_DEFAULT)
    )


def seed_spread(client: mlflow.MlflowClient, run_id: str, metric: str) -> tuple[float, int]:
    """The sample std of `metric` over the finished runs of `run_id`'s experiment that share its
    config apart from the seed, and how many there are (0.0 with fewer than two)."""
    run = client.get_run(run_id)

    def config(params: dict[str, str]) -> dict[str, str]:
        return {k: v for k, v in params.items() if not k.startswith(NOT_CONFIG)}

    same = config(run.data.params)
    repeats = [
        r.data.metrics[metric]
        for r in client.search_runs(
            [run.info.experiment_id], "attributes.status = 'FINISHED'", max_results=1000
        )
        if metric in r.data.metrics
        and r.data.tags.get(DATA_TAG) == run.data.tags.get(DATA_TAG)
        and config(r.data.params) == same
        and "aeflow.reproduces" not in r.data.tags  # a reproduction repeats a seed, it is no new one
    ]
    if len(repeats) < 2:
        return 0.0, len(repeats)
    return statistics.stdev(repeats), len(repeats)


def champion_version(client: mlflow.MlflowClient, name: str, alias: str) -> Any | None:
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:  # no such model or alias yet
        return None


def registered_version(client: mlflow.MlflowClient, name: str, run_id: str, metrics: dict) -> Any:
    """The version of `name` made from `run_id`, registered now if there is none."""
    try:
        existing = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    except MlflowException:
        existing = []
    if existing:
        return max(existing, key=lambda v: int(v.version))
    return registry.register(name, run_id, metrics, client)


def decide(
    candidate: Entry,
    champion: Entry | None,
    margin: float,
    direction: str,
) -> tuple[bool, str]:
    """Whether `candidate` replaces `champion`, and why (one line)."""
    if champion is None:
        return True, "no champion yet"
    if champion.run_id == candidate.run_id:
        return False, "the run is already the champion"
    if candidate.data != champion.data:
        return False, f"different test data ({DATA_TAG} {candidate.data} vs {champion.data})"
    if candidate.numerics != champion.numerics:
        return False, f"different numerics class ({candidate.numerics} vs {champion.numerics})"
    gain = champion.value - candidate.value if direction == "minimize" else candidate.value - champion.value
    if gain > margin:
        return True, f"better by {gain:.6g}, more than the margin {margin:.6g}"
    return False, f"better by {gain:.6g}, not more than the margin {margin:.6g}"


def promote(
    run_id: str,
    name: str,
    metric: str = DEFAULT_METRIC,
    alias: str = DEFAULT_ALIAS,
    margin: float = 0.0,
    direction: str = "minimize",
    client: mlflow.MlflowClient | None = None,
) -> Decision:
    """Register `run_id`'s model as a version of `name`; move `alias` to it if it beats the champion."""
    client = client or mlflow.MlflowClient()
    candidate = entry(client, run_id, metric)
    current = champion_version(client, name, alias)
    champion = entry(client, current.run_id, metric) if current is not None else None
    spread, repeats = seed_spread(client, run_id, metric)
    used = max(margin, spread)
    source = (
        f"seed spread of {repeats} runs ({spread:.6g})"
        if spread > margin
        else f"stated margin ({margin:.6g})"
    )
    promoted, reason = decide(candidate, champion, used, direction)
    # The evaluation's figures as the version's tags (`test.mse`, as the evaluate stage registers them).
    metrics = {
        k.replace("/", "."): v
        for k, v in client.get_run(run_id).data.metrics.items()
        if k.startswith(("test/", "pca/"))
    }
    version = registered_version(client, name, run_id, metrics)
    decision = Decision(
        promoted,
        reason,
        candidate,
        champion,
        current.version if current is not None else None,
        used,
        source,
        str(version.version),
    )
    for key, value in decision.tags(metric, alias, direction).items():
        client.set_model_version_tag(name, version.version, key, value)
    if promoted:
        client.set_registered_model_alias(name, alias, version.version)
    log.info("%s version %s: %s (%s)", name, version.version, "promoted" if promoted else "refused", reason)
    return decision


def report(decision: Decision, name: str, metric: str, alias: str) -> str:
    lines = [decision.candidate.line("candidate", metric)]
    if decision.champion is not None:
        lines.append(
            f"{decision.champion.line('champion', metric)}, {name} version {decision.champion_version}"
        )
    lines.append(f"margin:    {decision.margin:.6g} ({decision.margin_source})")
    if decision.promoted:
        lines.append(f"promoted: {name}@{alias} -> version {decision.version} ({decision.reason})")
    else:
        stays = f"version {decision.champion_version}" if decision.champion_version else "unset"
        lines.append(
            f"refused: {decision.reason}; {name}@{alias} stays {stays} "
            f"(version {decision.version} registered, not promoted)"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """`aeflow promote RUN_ID`: register the run's model; move the alias only if it beats the champion."""
    parser = argparse.ArgumentParser(prog="aeflow promote", description=main.__doc__)
    parser.add_argument("run_id", help="the MLflow run whose model to register")
    parser.add_argument("--name", default="aeflow", help="the registered model (default: aeflow)")
    parser.add_argument(
        "--alias", default=DEFAULT_ALIAS, help=f"the alias to move (default: {DEFAULT_ALIAS})"
    )
    parser.add_argument(
        "--metric", default=DEFAULT_METRIC, help=f"the test metric (default: {DEFAULT_METRIC})"
    )
    parser.add_argument(
        "--direction", choices=("minimize", "maximize"), default="minimize", help="which way is better"
    )
    parser.add_argument(
        "--margin",
        type=float,
        default=0.0,
        help="how much better the run must be, in the metric's units (default 0; "
        "the seed spread recorded in the store is used when larger)",
    )
    parser.add_argument("--tracking-uri", help="the store (default: MLFLOW_TRACKING_URI, else ./mlflow.db)")
    args = parser.parse_args(argv)
    if args.margin < 0:
        parser.error(f"--margin {args.margin}: must be >= 0")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    uri = tracking.tracking_uri(args.tracking_uri)
    mlflow.set_tracking_uri(uri)
    try:
        decision = promote(
            args.run_id,
            args.name,
            args.metric,
            args.alias,
            args.margin,
            args.direction,
            mlflow.MlflowClient(uri),
        )
    except AeflowError as exc:
        sys.stderr.write(f"error: {exc}\n")
        sys.exit(EXIT_ERROR)
    sys.stdout.write(report(decision, args.name, args.metric, args.alias))
    sys.exit(0 if decision.promoted else EXIT_REFUSED)


if __name__ == "__main__":
    main()
