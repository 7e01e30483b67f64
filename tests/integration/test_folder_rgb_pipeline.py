"""Unlabelled, RGB, non-square images through the real pipeline: `dvc exp run -S data=folder ...` in a
temporary clone (real git, real DVC, real MLflow store) on a generated folder of 24x32 colour PNGs
with no class subfolders."""

from __future__ import annotations

import base64
import io
import json
import math
import re
from pathlib import Path

import mlflow
import numpy as np
import pytest
from PIL import Image

from aeflow.evaluation.metrics import SKIPPED, UNLABELLED_NOTE
from tests.helpers import clone_project, ran_stages, run
from tests.image_folders import write_images

pytestmark = pytest.mark.integration

HEIGHT, WIDTH = 24, 32
VALUES = 3 * HEIGHT * WIDTH  # C * H * W
OVERRIDES = [
    "data=folder",
    f"data.image_size=[{HEIGHT},{WIDTH}]",
    "data.channels=3",
    f"data.input_features={VALUES}",
    "data.batch_size=32",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "evaluate.probe_train_size=100",
    "visualize.map_points=50",
]


def colour_channels_differ(png: bytes) -> bool:
    """Whether a PNG is in colour: its R, G and B planes are three different images."""
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)  # (H, W, 3)
    r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    return all((x != y).mean() > 0.05 for x, y in ((r, g), (g, b), (r, b)))


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> tuple[Path, Path]:
    project = clone_project(tmp_path_factory.mktemp("project"))
    images = tmp_path_factory.mktemp("images")
    write_images(images, 150, mode="RGB", size=(HEIGHT, WIDTH))  # no class subfolders: unlabelled
    overrides = [f"data.path={images}", *OVERRIDES]
    proc = run(project, "dvc", "exp", "run", *[a for o in overrides for a in ("-S", o)])
    assert ran_stages(proc.stdout) == {"download", "baselines", "train", "evaluate", "package", "visualize"}
    return project, images


def test_rgb_images_are_packed_and_reconstructed_in_their_shape(project):
    project, _ = project
    manifest = json.loads((project / "data/raw/manifest.json").read_text())
    assert manifest["classes"] == [] and sum(manifest["counts"].values()) == 150
    assert np.load(project / "data/raw/train_images.npy", mmap_mode="r").shape[1:] == (3, HEIGHT, WIDTH)
    metrics = json.loads((project / "metrics/evaluate.json").read_text())
    assert 0 < metrics["test"]["sq_err_per_image"] < VALUES and math.isfinite(
        metrics["pca"]["sq_err_per_image"]
    )
    assert metrics["compression"]["bytes_pixels_uint8"] == VALUES
    assert metrics["anomaly"]["shift"]  # the shifted copies are RGB too


def test_label_metrics_are_absent_and_the_note_says_why(project):
    project, _ = project
    metrics = json.loads((project / "metrics/evaluate.json").read_text())
    assert metrics[SKIPPED] == UNLABELLED_NOTE
    assert "pixels" not in metrics and "other_classes" not in metrics["anomaly"]
    for scorer in ("test", "pca"):
        assert not {"knn_acc", "logreg_acc", "sq_err_per_image_by_digit"} & set(metrics[scorer])
    details = json.loads((project / "metrics/evaluate_details.json").read_text())
    assert details["by_digit"] == {"test": {}, "pca": {}} and all("digit" not in w for w in details["worst"])
    report = (project / "reports/report.md").read_text()
    assert f"Not measured: {UNLABELLED_NOTE}." in report
    assert "k-NN accuracy" not in report and "Per class" not in report and "Per digit" not in report


def test_report_names_the_data_and_shows_colour_figures(project):
    project, images = project
    html = (project / "reports/report.html").read_text()
    assert f"your images, {HEIGHT}x{WIDTH} RGB (3 channel(s))" in html
    assert "MNIST digits" not in html
    inlined = [base64.b64decode(data) for data in re.findall(r'src="data:image/png;base64,([^"]+)"', html)]
    figures = project / "plots/figures"
    assert inlined[0] == (figures / "reconstructions.png").read_bytes()
    for name in ("reconstructions.png", "worst.png", "interpolation.png", "anomaly_extremes.png"):
        assert colour_channels_differ((figures / name).read_bytes()), name
    assert (figures / "codes_2d.png").is_file() and not (figures / "per_digit.png").exists()
    assert "in one colour (the images have no labels" in html


def test_mlflow_run_describes_the_data_and_serves_rgb_images(project):
    project, images = project
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    client = mlflow.MlflowClient()
    (run_,) = client.search_runs([client.get_experiment_by_name("autoencoder").experiment_id])
    assert run_.data.tags[f"evaluate.{SKIPPED}"] == UNLABELLED_NOTE
    assert f"your images, {HEIGHT}x{WIDTH} RGB" in run_.data.tags["mlflow.note.content"]
    assert not any(key.startswith(("pixels/", "test/knn")) for key in run_.data.metrics)
    model = mlflow.pyfunc.load_model(f"runs:/{run_.info.run_id}/model")
    assert tuple(model.metadata.signature.inputs.to_dict()[0]["tensor-spec"]["shape"]) == (-1, VALUES)
    x = np.random.default_rng(0).random((2, VALUES), dtype=np.float32)
    assert model.predict(x).shape == (2, VALUES)
    assert model.predict(x, params={"output": "score"}).shape == (2,)
    with pytest.raises(Exception, match=rf"does not match expected shape \(-1, {VALUES}\)"):  # MLflow's check
        model.predict(np.zeros((2, 784), dtype=np.float32))
