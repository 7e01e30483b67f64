"""A queued sweep (`dvc exp run --queue -S 'model.latent_dim=choice(...)'`, `dvc queue start -j 2`).

Queued experiments run in temporary copies under .dvc/tmp/exps/; each must
land its MLflow run in the project's one store (`<root>/mlflow.db`), tagged
with its DVC experiment name, and find the data in DVC's cache.
"""

from __future__ import annotations

import csv
import io
import time

import mlflow
import pytest

from tests.helpers import FAST
from tests.team.conftest import run

pytestmark = [pytest.mark.slow, pytest.mark.integration]

SIZES = (8, 16)


def wait_for_queue(project, polls: int = 400) -> str:
    for _ in range(polls):  # each poll is a `dvc queue status` call plus a pause
        status = run(project, "dvc", "queue", "status").stdout
        if not any(word in status for word in ("Queued", "Running")):
            return status
        time.sleep(3)
    pytest.fail(f"the queue did not drain:\n{status}")


def test_queued_sweep_lands_every_experiment_in_the_project_store(team_project, mnist_slice):
    project = team_project.path
    sizes = ",".join(map(str, SIZES))
    # DVC recomposes params.yaml from conf/ and the -S overrides: the short-run settings go along.
    fixed = [*mnist_slice, *FAST]
    out = run(
        project,
        "dvc",
        "exp",
        "run",
        "--queue",
        "-S",
        f"model.latent_dim=choice({sizes})",
        *[arg for override in fixed for arg in ("-S", override)],
    )
    assert (out.stdout + out.stderr).count("Queued experiment") == len(SIZES), out.stdout + out.stderr
    # One worker: with several, DVC's queue can fail a task for its own reasons (treeverse/dvc#10673,
    # seen here under load); tests/reliability/test_concurrency.py covers two at a time.
    run(project, "dvc", "queue", "start", "-j", "1")
    status = wait_for_queue(project)
    failed = [line.split()[0] for line in status.splitlines() if line.endswith("Failed")]
    logs = "".join(run(project, "dvc", "queue", "logs", task, check=False).stdout[-4000:] for task in failed)
    assert status.count("Success") == len(SIZES) and not failed, status + logs

    shown = run(project, "dvc", "exp", "show", "--csv", "--no-pager").stdout
    # Experiment rows (typ branch_commit/branch_base), not the workspace and baseline rows.
    rows = [r for r in csv.DictReader(io.StringIO(shown)) if r["Experiment"] and r["typ"] != "baseline"]

    def column(row, name):  # DVC prefixes a column with its file only when the name is ambiguous
        return next(v for k, v in row.items() if k == name or k.endswith(f":{name}"))

    assert sorted(int(column(r, "model.latent_dim")) for r in rows) == list(SIZES), shown
    assert all(float(column(r, "test.sq_err_per_image")) > 0 for r in rows), shown
    names = {r["Experiment"] for r in rows}

    # The runs are in the project's store, not in the experiments' throwaway folders.
    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("autoencoder")
    runs = client.search_runs([experiment.experiment_id])
    assert {r.data.tags.get("dvc_exp_name") for r in runs} == names
    head = run(project, "git", "rev-parse", "HEAD").stdout.strip()
    for r in runs:
        assert r.info.status == "FINISHED"
        assert r.data.tags["dvc_baseline_rev"] == head
        assert r.data.tags["git_commit"] != "unknown"
        assert r.data.metrics["test/sq_err_per_image"] > 0
        assert r.data.params["model.latent_dim"] in {str(s) for s in SIZES}
        figures = {a.path for a in client.list_artifacts(r.info.run_id, "figures")}
        assert "figures/reconstructions.png" in figures
        assert r.info.artifact_uri.startswith((project / "mlartifacts").as_uri())
    assert not list((project / ".dvc" / "tmp").rglob("mlflow.db"))
    # The data came from DVC's cache: no experiment ran the download stage.
    for name in names:
        logs = run(project, "dvc", "queue", "logs", name).stdout
        assert "Running stage 'train'" in logs and "Running stage 'download'" not in logs, logs[-2000:]
