"""Visual inspection through the real pipeline: `dvc exp run -S experiment=inspection -S
data.path=...` in a temporary clone (real git, real DVC, real MLflow store) on a generated
MVTec-layout category, checked against its masks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from aeflow.data.mvtec_synth import DEFECTS, generate
from tests.helpers import clone_project, ran_stages, run

pytestmark = pytest.mark.integration

METHODS = ("ae_l2", "ae_ssim", "pca_l2", "pca_ssim")
METRICS = ("image_auroc", "pixel_auroc", "aupro", "image_f1_max", "pixel_f1_max")
N_TEST = 3  # test images of each type (good and every defect type)
TINY = [
    "experiment=inspection",
    "data.image_size=[32,32]",
    "data.input_features=1024",
    "data.val_size=0.2",
    "data.batch_size=8",
    "trainer.max_epochs=2",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "evaluate.inspection.ssim_window=7",
    "evaluate.inspection.pca_components=4",
    "evaluate.inspection.batch_size=5",  # batches that do not divide the test split
]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    project = clone_project(tmp_path_factory.mktemp("project"))
    root = generate(tmp_path_factory.mktemp("images"), "stripes", n_train=40, n_test=N_TEST, size=32, seed=0)
    overrides = [*TINY, f"data.path={root}"]
    proc = run(project, "dvc", "exp", "run", *[a for o in overrides for a in ("-S", o)])
    assert ran_stages(proc.stdout) == {"download", "baselines", "train", "evaluate", "package", "visualize"}
    return project


def test_metrics_per_method_and_defect_type(project):
    metrics = json.loads((project / "metrics/evaluate.json").read_text())
    assert set(metrics) == {"inspection"}  # no label probes: a category has defect types, not classes
    found = metrics["inspection"]
    assert set(found) == set(METHODS)
    for method in METHODS:
        assert set(found[method]) == {"all", *DEFECTS}, method
        for kind, values in found[method].items():
            for name in METRICS:
                assert 0 <= values[name] <= 1 and math.isfinite(values[name]), (method, kind, name)
    # Brightness defects stand out of a PCA residual of good stripes even at 4 components:
    # a map that ignored the masks (or scored the wrong pixels) would sit near 0.5.
    assert found["pca_l2"]["stain"]["pixel_auroc"] > 0.7
    details = json.loads((project / "metrics/evaluate_details.json").read_text())["inspection"]
    assert details["test_images"] == {"good": N_TEST, **{d: N_TEST for d in DEFECTS}}


def test_metrics_are_in_the_mlflow_run(project):
    from mlflow import MlflowClient

    run_id = json.loads((project / "models/run.json").read_text())["run_id"]
    logged = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}").get_run(run_id).data.metrics
    evaluated = json.loads((project / "metrics/evaluate.json").read_text())["inspection"]
    assert logged["inspection/ae_ssim/scratch/aupro"] == pytest.approx(
        evaluated["ae_ssim"]["scratch"]["aupro"]
    )
    assert len([k for k in logged if k.startswith("inspection/")]) >= len(METHODS) * 5 * len(METRICS)


def test_report_has_per_defect_tables_and_figures(project):
    report = (project / "reports/report.md").read_text()
    assert "## Inspection metrics per defect type" in report
    assert "## autoencoder, SSIM map" in report and "## PCA baseline, L2 map" in report
    for kind in DEFECTS:
        figure = project / "plots/figures" / f"inspection_{kind}.png"
        assert figure.stat().st_size > 0, kind
        assert f"(../plots/figures/inspection_{kind}.png)" in report
        assert f"| {kind} |" in report
    assert "inspection_good.png" not in report
    for method in METHODS:  # ROC and PRO curves, one figure per method
        assert (project / "plots/figures" / f"curves_{method}.png").stat().st_size > 0, method
        assert f"(../plots/figures/curves_{method}.png)" in report


def test_the_served_map_finds_the_generated_defects_where_their_masks_are(project):
    """The logged MLflow model's `output=anomaly_map` on the generated images, scored against the
    generator's own mask files (not the pipeline's packed copy)."""
    import mlflow
    import numpy as np
    import yaml
    from PIL import Image
    from sklearn.metrics import roc_auc_score

    root = Path(yaml.safe_load((project / "params.yaml").read_text())["data"]["path"])
    run_id = json.loads((project / "models/run.json").read_text())["run_id"]
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    served = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    # Scratches: what two epochs of the preset already find (brightness changes along thin lines).
    photos = sorted((root / "test" / "scratch").glob("*.png"))
    images = np.stack([np.asarray(Image.open(p), dtype=np.float32) / 255 for p in photos])
    masks = np.stack(
        [np.asarray(Image.open(root / "ground_truth" / "scratch" / f"{p.stem}_mask.png")) > 0 for p in photos]
    )
    # Rows of C*H*W floats, as the logged signature takes them.
    maps = served.predict(images.reshape(len(images), -1), params={"output": "anomaly_map"})
    assert maps.shape == masks.shape and maps.dtype == np.float32
    right = roc_auc_score(masks.ravel(), maps.ravel())
    # Each image's map against another image's mask: the defects sit elsewhere, so a map that
    # ignored where the defect is would score the same against both.
    wrong = roc_auc_score(np.roll(masks, 1, axis=0).ravel(), maps.ravel())
    assert right > 0.9 and right > wrong + 0.3, (right, wrong)
    # The served map is the map the evaluate stage scored (its pixel AUROC is binned: 1000 bins).
    evaluated = json.loads((project / "metrics/evaluate.json").read_text())["inspection"]
    assert right == pytest.approx(evaluated["ae_l2"]["scratch"]["pixel_auroc"], abs=0.01)
