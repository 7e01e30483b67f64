"""The real pipeline: a temporary clone (real git, real DVC), real MNIST from the shared mirror."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest

from tests.helpers import FAST, clone_project, compose, ran_stages, sh

pytestmark = pytest.mark.integration

@pytest.fixture(scope="module")
def project(tmp_path_factory, mnist_mirror) -> Path:
    project = clone_project(tmp_path_factory.mktemp("project"))
    compose(project, f"data.source.mirrors=[{mnist_mirror.as_uri()}/]", *FAST)
    out = sh(project, "dvc", "repro")
    assert ran_stages(out) == {"download", "train", "evaluate", "visualize"}
    return project


def test_repro_produces_every_declared_output(project):
    for rel in ("data/raw/train-images-idx3-ubyte", "data/raw/t10k-labels-idx1-ubyte",
                "models/best.ckpt", "models/last.ckpt", "models/run.json", "metrics/train.json",
                "metrics/evaluate.json", "plots/loss.csv", "plots/figures/reconstructions.png",
                "plots/figures/codes_2d.png", "plots/figures/loss.png"):
        assert (project / rel).is_file() and (project / rel).stat().st_size > 0, rel
    metrics = json.loads((project / "metrics/evaluate.json").read_text())
    assert 0 < metrics["test"]["mse"] < 0.2
    assert metrics["test"]["sq_err_per_image"] == pytest.approx(metrics["test"]["mse"] * 784)
    assert 0 < metrics["pca"]["sq_err_per_image"] < metrics["test"]["sq_err_per_image"]
    assert set(metrics["test"]["sq_err_per_image_by_digit"]) == {str(d) for d in range(10)}


def test_one_mlflow_run_holds_params_metrics_images_and_model(project):
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name("autoencoder")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["optimizer._target_"] == "torch.optim.RMSprop"
    assert run.data.tags["git_commit"] != "unknown" and run.data.tags["data_dvc_md5"].endswith(".dir")
    assert len(client.get_metric_history(run.info.run_id, "val/loss")) == 1
    metrics = json.loads((project / "metrics/evaluate.json").read_text())
    assert run.data.metrics["test/sq_err_per_image"] == pytest.approx(metrics["test"]["sq_err_per_image"])
    assert run.data.metrics["pca/sq_err_per_image"] == pytest.approx(metrics["pca"]["sq_err_per_image"])
    figures = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    assert {"figures/reconstructions.png", "figures/codes_2d.png", "figures/loss.png"} <= figures
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    x = np.random.default_rng(0).random((3, 784), dtype=np.float32)
    assert model.predict(x).shape == (3, 784)
    assert model.metadata.signature is not None


def test_second_repro_runs_nothing(project):
    assert ran_stages(sh(project, "dvc", "repro")) == set()


def test_training_param_change_reruns_train_evaluate_visualize_only(project, mnist_mirror):
    compose(project, f"data.source.mirrors=[{mnist_mirror.as_uri()}/]", *FAST, "optimizer.lr=0.005")
    assert ran_stages(sh(project, "dvc", "repro")) == {"train", "evaluate", "visualize"}
