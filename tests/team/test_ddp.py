"""`trainer=ddp`: two CPU processes (gloo) train one model; only rank zero tracks and writes."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
from omegaconf import OmegaConf

from aeflow.config.params import compose
from aeflow.models.weights import load_weights
from aeflow.serving import package
from aeflow.serving import pyfunc as serving
from tests.conftest import REPO, make_synthetic_idx
from tests.team.conftest import run

pytestmark = pytest.mark.slow


def test_two_process_ddp_logs_once_and_the_model_loads(tmp_path: Path, monkeypatch):
    files = make_synthetic_idx(tmp_path / "data", n_train=200)
    cfg = compose(
        [
            "trainer=ddp",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            "trainer.max_epochs=2",
            "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false",
            "trainer.log_every_n_steps=1",
            "data.batch_size=16",
            "data.val_size=40",
        ],
        conf_dir=REPO / "conf",
    )
    cfg.data.files = files
    cfg.paths.data = str(tmp_path / "data")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg.mlflow.tracking_uri = uri
    (tmp_path / "params.yaml").write_text(OmegaConf.to_yaml(cfg))

    out = run(tmp_path, "python", "-m", "aeflow.stages.train", timeout=600)
    log = out.stdout + out.stderr
    # Two processes joined one gloo process group.
    assert "distributed_backend=gloo" in log and "All distributed processes registered" in log, log[-3000:]

    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name(cfg.mlflow.experiment_name)
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1, "every rank created its own MLflow run"
    run_info = json.loads((tmp_path / "models/run.json").read_text())
    assert runs[0].info.run_id == run_info["run_id"] and runs[0].info.status == "FINISHED"
    # One value per epoch: a second rank logging would double the history.
    history = client.get_metric_history(run_info["run_id"], "val/loss")
    assert [m.step for m in history] == sorted({m.step for m in history}) and len(history) == 2
    assert runs[0].data.params["trainer.strategy"] == "ddp"

    trained = json.loads((tmp_path / "metrics/train.json").read_text())
    assert trained["epochs"] == 2 and np.isfinite(trained["best_val_loss"])
    model = load_weights(cfg, tmp_path / "models/best.ckpt")
    # The package stage's work on the DDP checkpoint: the MLflow model lands in the one run.
    monkeypatch.chdir(tmp_path)
    package.from_config(cfg)
    mlflow.set_tracking_uri(uri)  # runs:/ URIs resolve against the global store
    served = mlflow.pyfunc.load_model(f"runs:/{run_info['run_id']}/model")
    x = np.random.default_rng(0).random((3, 784), dtype=np.float32)
    np.testing.assert_allclose(
        served.predict(x, params={"output": "code"}), serving.predict(model, x, "code"), rtol=1e-5, atol=1e-6
    )
