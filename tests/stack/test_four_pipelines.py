"""Four pipelines logging to the PostgreSQL-backed server at once, then a champion promoted on
evidence among their runs (`aeflow promote`)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest

from aeflow.team import stack as team
from aeflow.tracking.promote import EXIT_REFUSED
from tests.stack.conftest import BIN, duplicated_metric_steps, pg_rows, run_in, stack_env, tiny_clone

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N_RUNS = 4
EXPERIMENT = "four-pipelines"
MODEL = "aeflow-stack"
METRIC = "test/sq_err_per_image"
FIGURES = {
    "reconstructions.png",
    "worst.png",
    "codes_2d.png",
    "interpolation.png",
    "per_digit.png",
    "loss.png",
}


@dataclass
class FourRuns:
    stack: team.Stack
    projects: list[Path]
    run_ids: list[str]


@pytest.fixture(scope="module")
def four_runs(stack, tiny_mirror, tmp_path_factory) -> FourRuns:
    """Four clones (seeds 0..3) each running `dvc repro` at the same time against the stack."""
    base = tiny_clone(tmp_path_factory.mktemp("four-base"), tiny_mirror)
    projects, procs = [], []
    for seed in range(N_RUNS):
        project = tmp_path_factory.mktemp(f"pipeline{seed}") / "p"
        shutil.copytree(base, project, symlinks=True)
        overrides = [f"seed={seed}", f"mlflow.experiment_name={EXPERIMENT}"]
        run_in(project, stack, sys.executable, "-m", "aeflow.config", *overrides)
        projects.append(project)
    for project in projects:
        procs.append(
            subprocess.Popen(
                [str(BIN / "dvc"), "repro"],
                cwd=project,
                env=stack_env(stack, project),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    for proc in procs:
        out, _ = proc.communicate(timeout=1800)  # four pipelines on a busy CI machine
        assert proc.returncode == 0, out[-4000:]
    run_ids = [json.loads((p / "metrics/train.json").read_text())["mlflow_run_id"] for p in projects]
    return FourRuns(stack, projects, run_ids)


def test_four_pipelines_at_once_lose_nothing_and_duplicate_nothing(four_runs):
    stack, run_ids = four_runs.stack, four_runs.run_ids
    client = mlflow.MlflowClient(stack.tracking_uri)
    assert len(set(run_ids)) == N_RUNS
    for project, run_id in zip(four_runs.projects, run_ids):
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"
        history = {k: client.get_metric_history(run_id, k) for k in ("train/loss", "val/loss")}
        assert [m.step for m in history["val/loss"]] == sorted({m.step for m in history["val/loss"]})
        assert len(history["val/loss"]) == 2  # one per epoch
        evaluate = json.loads((project / "metrics/evaluate.json").read_text())
        assert run.data.metrics[METRIC] == pytest.approx(evaluate["test"]["sq_err_per_image"])
        assert {"best_val_loss", "train_time_s", "train/loss"} <= set(run.data.metrics)
        assert any(k.startswith("system/") for k in run.data.metrics), sorted(run.data.metrics)
        assert sorted(d.dataset.name for d in run.inputs.dataset_inputs) == [
            "tiny-test",
            "tiny-train",
            "tiny-val",
        ]
        assert {a.path.split("/")[-1] for a in client.list_artifacts(run_id, "figures")} >= FIGURES
        models = client.search_logged_models([run.info.experiment_id], f"source_run_id = '{run_id}'")
        assert [m.name for m in models] == ["model"]

    # Straight from PostgreSQL: no metric step, dataset or dataset link written twice.
    ids = list(run_ids)
    metric_rows = pg_rows(stack, "SELECT count(*) FROM metrics WHERE run_uuid = ANY(%s)", ids)[0][0]
    assert duplicated_metric_steps(stack, ids) == []
    assert (
        pg_rows(
            stack,
            "SELECT name, digest FROM datasets GROUP BY experiment_id, name, digest HAVING count(*) > 1",
        )
        == []
    )
    links = pg_rows(
        stack,
        "SELECT source_id FROM inputs WHERE destination_id = ANY(%s) "
        "GROUP BY source_type, source_id, destination_type, destination_id HAVING count(*) > 1",
        ids,
    )
    assert links == []
    datasets = pg_rows(stack, "SELECT count(*) FROM inputs WHERE destination_id = ANY(%s)", ids)[0][0]
    print(f"{N_RUNS} runs FINISHED; {metric_rows} metric rows, {datasets} dataset links; duplicates: none")


def promote(stack: team.Stack, project: Path, run_id: str, *args: str):
    return run_in(project, stack, str(BIN / "aeflow"), "promote", run_id, "--name", MODEL, *args, check=False)


def test_a_champion_is_replaced_only_by_a_run_better_by_more_than_the_margin(four_runs):
    stack, project = four_runs.stack, four_runs.projects[0]
    client = mlflow.MlflowClient(stack.tracking_uri)
    value = {r: client.get_run(r).data.metrics[METRIC] for r in four_runs.run_ids}
    worst, best = max(value, key=value.get), min(value, key=value.get)
    gain = value[worst] - value[best]

    first = promote(stack, project, worst)
    assert first.returncode == 0, first.stdout + first.stderr
    assert client.get_model_version_by_alias(MODEL, "champion").run_id == worst

    # Better, but by less than the stated margin: refused, both figures and the margin printed.
    refused = promote(stack, project, best, "--margin", repr(gain * 2))
    print(refused.stdout)
    assert refused.returncode == EXIT_REFUSED, refused.stdout + refused.stderr
    assert f"{value[best]:.6g}" in refused.stdout and f"{value[worst]:.6g}" in refused.stdout
    assert f"margin:    {gain * 2:.6g}" in refused.stdout and "refused" in refused.stdout
    assert client.get_model_version_by_alias(MODEL, "champion").run_id == worst
    (version,) = client.search_model_versions(f"name = '{MODEL}' and run_id = '{best}'")
    assert version.tags["aeflow.promote.decision"] == "refused"
    assert float(version.tags["aeflow.promote.champion_value"]) == value[worst]

    # The margin is the seed spread of the four runs (same config, seeds 0..3): the best beats it.
    accepted = promote(stack, project, best)
    print(accepted.stdout)
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert "seed spread of 4 runs" in accepted.stdout
    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert champion.run_id == best and champion.version == version.version
    assert champion.tags["aeflow.promote.decision"] == "promoted"
    assert champion.tags["aeflow.promote.data_dvc_md5"] == client.get_run(best).data.tags["data_dvc_md5"]


def test_logged_models_carry_test_metrics_and_the_best_is_found_across_runs(four_runs):
    from aeflow.tracking import logged_models

    mlflow.set_tracking_uri(four_runs.stack.tracking_uri)
    client = mlflow.MlflowClient()
    for run_id in four_runs.run_ids:
        assert len(logged_models.link_metrics(run_id)) == 1
    experiment = client.get_experiment_by_name(EXPERIMENT).experiment_id
    found = logged_models.best([experiment], METRIC)
    values = {r: client.get_run(r).data.metrics[METRIC] for r in four_runs.run_ids}
    assert found.source_run_id == min(values, key=values.get)
    linked = {m.key: m for m in found.metrics}
    assert linked[METRIC].value == values[found.source_run_id] and linked[METRIC].dataset_name == "tiny-test"
