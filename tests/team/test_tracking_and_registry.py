"""Remote tracking and the model registry: a real `mlflow server`, the real pipeline, a registered version."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
from omegaconf import OmegaConf

from tests.team.conftest import MODEL_NAME

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def _the_run(client: mlflow.MlflowClient, project: Path):
    run_id = json.loads((project / "models/run.json").read_text())["run_id"]
    return client.get_run(run_id)


def test_run_metrics_images_and_model_are_on_the_server(team_project, tracking_server):
    client = mlflow.MlflowClient(tracking_server.url)
    experiment = client.get_experiment_by_name("autoencoder")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = _the_run(client, team_project.path)
    assert run.info.run_id == runs[0].info.run_id and run.info.status == "FINISHED"
    info = json.loads((team_project.path / "models/run.json").read_text())
    assert info["tracking_uri"] == tracking_server.url
    # Nothing landed in the clone's local store.
    assert team_project.local_store_after_repro == []
    evaluated = json.loads((team_project.path / "metrics/evaluate.json").read_text())
    assert run.data.metrics["test/sq_err_per_image"] == pytest.approx(evaluated["test"]["sq_err_per_image"])
    assert len(client.get_metric_history(run.info.run_id, "val/loss")) == 1
    assert run.data.tags["git_commit"] != "unknown"
    # Artifacts go through the server (proxied) into its --artifacts-destination.
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    figures = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    assert "figures/reconstructions.png" in figures
    stored = list(tracking_server.artifacts.rglob("reconstructions.png"))
    assert len(stored) == 1 and stored[0].stat().st_size > 0
    local = client.download_artifacts(
        run.info.run_id, "figures/reconstructions.png", str(team_project.path.parent)
    )
    assert Path(local).read_bytes() == stored[0].read_bytes()
    mlflow.set_tracking_uri(tracking_server.url)
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    x = np.random.default_rng(0).random((2, 784), dtype=np.float32)
    assert model.predict(x, params={"output": "code"}).shape == (2, 128)


def test_evaluate_registers_a_version_with_test_metrics(team_project, tracking_server):
    client = mlflow.MlflowClient(tracking_server.url)
    versions = client.search_model_versions(f"name='{MODEL_NAME}'")
    assert len(versions) == 1
    version = versions[0]
    run = _the_run(client, team_project.path)
    assert version.run_id == run.info.run_id and version.status == "READY"
    evaluated = json.loads((team_project.path / "metrics/evaluate.json").read_text())
    for key in ("test", "pca"):
        assert float(version.tags[f"{key}.sq_err_per_image"]) == pytest.approx(
            evaluated[key]["sq_err_per_image"]
        )
    assert version.tags["git_commit"] == run.data.tags["git_commit"]
    assert "test.sq_err_per_image" in version.description
    # Promotion: an alias a deployment follows.
    client.set_registered_model_alias(MODEL_NAME, "champion", version.version)
    assert client.get_model_version_by_alias(MODEL_NAME, "champion").run_id == run.info.run_id
    # The switch is in the committed config the stage read.
    params = OmegaConf.load(team_project.path / "params.yaml")
    assert params.mlflow.register_model == MODEL_NAME
