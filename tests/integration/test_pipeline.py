"""The real pipeline: a temporary clone (real git, real DVC), real MNIST (tests/conftest.py mnist_mirror)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
import yaml

from tests.helpers import FAST, clone_project, compose, ran_stages, run, sh

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def project(tmp_path_factory, mnist_slice) -> Path:
    project = clone_project(tmp_path_factory.mktemp("project"))
    compose(project, *mnist_slice, *FAST)
    out = sh(project, "dvc", "repro")
    assert ran_stages(out) == {"download", "baselines", "train", "evaluate", "package", "visualize"}
    return project


def test_repro_produces_every_declared_output(project):
    for rel in (
        "data/raw/train-images-idx3-ubyte",
        "data/raw/t10k-labels-idx1-ubyte",
        "models/best.ckpt",
        "models/last.ckpt",
        "models/run.json",
        "metrics/train.json",
        "metrics/evaluate.json",
        "plots/loss.csv",
        "plots/figures/reconstructions.png",
        "plots/figures/codes_2d.png",
        "plots/figures/loss.png",
        # evaluation details, the per-digit DVC plot, the figures, the report
        "metrics/evaluate_details.json",
        "plots/per_digit.csv",
        "plots/figures/worst.png",
        "plots/figures/interpolation.png",
        "plots/figures/per_digit.png",
        "reports/report.html",
        "reports/report.md",
        # the baselines (data only) and the package (what is served)
        "baselines/pca.npz",
        "baselines/metrics.json",
        "baselines/anomaly_scores.npz",
        "package/weights.pt",
        "package/config.yaml",
        "package/detector.json",
        "package/onnx/encoder.onnx",
        "package/onnx/decoder.onnx",
    ):
        assert (project / rel).is_file() and (project / rel).stat().st_size > 0, rel
    metrics = json.loads((project / "metrics/evaluate.json").read_text())
    assert 0 < metrics["test"]["mse"] < 0.2
    assert metrics["test"]["sq_err_per_image"] == pytest.approx(metrics["test"]["mse"] * 784)
    assert 0 < metrics["pca"]["sq_err_per_image"] < metrics["test"]["sq_err_per_image"]
    assert set(metrics["test"]["sq_err_per_image_by_digit"]) == {str(d) for d in range(10)}
    for scorer in ("test", "pca"):
        assert 0 < metrics[scorer]["ssim"] <= 1 and metrics[scorer]["psnr"] > 5
        assert 0.1 < metrics[scorer]["knn_acc"] <= 1 and 0.1 < metrics[scorer]["logreg_acc"] <= 1
        # 8-bit codes cost a little reconstruction quality, never a lot.
        assert metrics[scorer]["sq_err_per_image_int8"] == pytest.approx(
            metrics[scorer]["sq_err_per_image"], rel=0.2
        )
    # k-NN on MNIST pixels, 2,000 training images: about 0.88 on the slice's 2,000 test images.
    assert metrics["pixels"]["knn_acc"] > 0.85
    assert metrics["compression"]["bytes_float32"] == 4 * metrics["latent_dim"] == 512


def test_report_holds_the_runs_metrics_and_is_self_contained(project):
    import re

    from aeflow.reporting.report import fmt

    metrics = json.loads((project / "metrics/evaluate.json").read_text())
    details = json.loads((project / "metrics/evaluate_details.json").read_text())
    run_id = json.loads((project / "models/run.json").read_text())["run_id"]
    html = (project / "reports/report.html").read_text()
    md = (project / "reports/report.md").read_text()
    for text in (html, md):
        for value in (
            metrics["test"]["sq_err_per_image"],
            metrics["pca"]["sq_err_per_image"],
            metrics["test"]["knn_acc"],
            metrics["pca"]["logreg_acc"],
            metrics["pixels"]["knn_acc"],
        ):
            assert fmt(value) in text
        assert run_id in text and str(details["worst"][0]["index"]) in text
    figures = sorted((project / "plots/figures").glob("*.png"))
    # every figure inlined once (six on reconstruction, the rest on anomaly scores)
    assert len(figures) > 6 and html.count('src="data:image/png;base64,') == len(figures)
    assert not re.search(r'(src|href)="(?!data:)', html)  # nothing to fetch: opens from disk
    for name in ("worst", "interpolation", "per_digit", "codes_2d", "reconstructions", "loss"):
        assert f"../plots/figures/{name}.png" in md
        assert (project / "plots/figures" / f"{name}.png").is_file()
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    client = mlflow.MlflowClient()
    assert {a.path for a in client.list_artifacts(run_id, "report")} == {
        "report/report.html",
        "report/report.md",
    }
    run = client.get_run(run_id)
    assert run.data.metrics["pixels/knn_acc"] == pytest.approx(metrics["pixels"]["knn_acc"])
    assert run.data.metrics["test/ssim"] == pytest.approx(metrics["test"]["ssim"])


def test_dvc_plots_render_the_per_digit_bars(project, tmp_path):
    sh(project, "dvc", "plots", "show", "-o", str(tmp_path / "plots"))
    page = (tmp_path / "plots" / "index.html").read_text()
    assert "Squared error per test image by digit" in page
    assert "0 autoencoder" in page and "9 PCA" in page


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


def test_training_param_change_reruns_all_but_the_data_and_the_baselines(project, mnist_slice):
    compose(project, *mnist_slice, *FAST, "optimizer.lr=0.005")
    assert ran_stages(sh(project, "dvc", "repro")) == {"train", "evaluate", "package", "visualize"}


def make_run(project: Path, *overrides: str) -> str:
    """What `make run ARGS="..."` runs, with this test's environment (`-o`: its install is not under test)."""
    venv = Path(sys.prefix)
    args = " ".join(overrides)
    return sh(project, "make", "-o", str(venv / ".installed"), f"VENV={venv}", f"ARGS={args}", "run")


def test_make_run_runs_the_edited_conf_then_nothing(project, mnist_slice):
    fixed = (*mnist_slice, *FAST)
    config = project / "conf" / "config.yaml"
    assert config.read_text().count("\nseed: 42\n") == 1
    config.write_text(config.read_text().replace("\nseed: 42\n", "\nseed: 7\n"))

    assert {"train", "evaluate", "visualize"} <= ran_stages(make_run(project, *fixed))
    locked = yaml.safe_load((project / "dvc.lock").read_text())["stages"]["train"]["params"]["params.yaml"]
    assert locked["seed"] == 7
    run_id = json.loads((project / "models/run.json").read_text())["run_id"]
    run = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}").get_run(run_id)
    assert run.data.params["seed"] == "7"

    assert ran_stages(make_run(project, *fixed)) == set()
    # Nothing staged behind the user's back; what is new is what they commit (the lock file, the
    # metrics and plots git keeps); no lock file of the tracking store.
    assert sh(project, "git", "diff", "--cached", "--name-only") == ""
    untracked = {ln[3:] for ln in sh(project, "git", "status", "--porcelain").splitlines() if ln[:2] == "??"}
    assert untracked <= {"dvc.lock", "metrics/", "plots/"}, untracked


def test_a_stage_on_a_stale_params_yaml_names_the_keys_and_the_fix(project):
    config = project / "conf" / "config.yaml"
    seed = yaml.safe_load(config.read_text())["seed"]
    config.write_text(config.read_text().replace(f"\nseed: {seed}\n", f"\nseed: {seed + 1}\n"))
    try:
        out = run(project, sys.executable, "-m", "aeflow.stages.download").stderr
    finally:
        config.write_text(config.read_text().replace(f"\nseed: {seed + 1}\n", f"\nseed: {seed}\n"))
    assert "params.yaml is not the composition of conf/" in out
    assert f"seed: {seed} in params.yaml, {seed + 1} from conf/" in out
    assert "`make run`" in out


def test_dvc_exp_run_overrides_are_not_reported_as_stale(project, mnist_slice):
    # DVC's Hydra integration composes conf/ with the -S overrides into params.yaml, then runs
    # the (forced) download stage: its params are current, though not those of conf/ alone.
    sets = [arg for override in (*mnist_slice, "seed=123") for arg in ("-S", override)]
    out = sh(project, "dvc", "exp", "run", "--force", "download", *sets)
    assert ran_stages(out) == {"download"}
    assert "not the composition" not in out
