"""`mlflow models serve` flags Fashion-MNIST images as anomalies, and MNIST test images mostly
not, at the rates the evaluate stage reports for the same model."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from aeflow.data import ood
from aeflow.data.idx import read_idx
from aeflow.evaluation import anomaly as A
from tests.conftest import REPO
from tests.helpers import require_system_path
from tests.team.conftest import MODEL_NAME, serve_model, stop_server

pytestmark = [pytest.mark.slow, pytest.mark.integration]
OUTSIDE = "fashion_mnist"
# Fashion-MNIST as Debian's dataset-fashion-mnist installs it; the official mirror is on the
# internet, which tests never reach.
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def _flags(url: str, images: np.ndarray, score: str, batch: int = 1000) -> np.ndarray:
    """The served is_anomaly answers for uint8 images (N, 28, 28), `batch` images a request."""
    out = []
    for start in range(0, len(images), batch):
        x = images[start : start + batch].reshape(-1, 784).astype(np.float32) / 255.0
        body = {"inputs": x.tolist(), "params": {"output": "is_anomaly", "score": score}}
        request = urllib.request.Request(
            url, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=300) as resp:  # noqa: S310 (127.0.0.1)
            out.append(np.asarray(json.loads(resp.read())["predictions"], dtype=bool))
    return np.concatenate(out)


@pytest.fixture(scope="session")
def fashion_mnist() -> Path:
    return require_system_path(FASHION_MNIST, "dataset-fashion-mnist")


# `fashion_mnist` first: without the package the test skips before the shared project is built.
def test_served_model_flags_the_outside_set_at_the_evaluated_rates(
    fashion_mnist, team_project, tracking_server, tmp_path
):
    from aeflow.evaluation.evaluate import evaluate
    from aeflow.models.weights import BEST, checkpoint_path, load_weights

    project = team_project.path
    # The evaluate stage's computation for the pipeline's model, with Fashion-MNIST as outside set
    # (fetched by the download stage's code from the local copy; in-process, so the shared run's
    # MLflow run is untouched).
    cfg = OmegaConf.load(project / "params.yaml")
    cfg.evaluate.ood = [OUTSIDE]
    cfg.paths.ood = str(tmp_path / "ood")
    for key in ("data", "checkpoints"):
        cfg.paths[key] = str(project / cfg.paths[key])
    mirrors = {OUTSIDE: [fashion_mnist.as_uri() + "/"]}
    ood.download(cfg.paths.ood, [OUTSIDE], conf_dir=REPO / "conf" / "data", mirrors=mirrors)
    reported = evaluate(cfg, load_weights(cfg, checkpoint_path(cfg, BEST))).metrics[A.ANOMALY]
    # The configured score, and the one that flags most Fashion-MNIST images (a short training's
    # squared error may not separate the sets as well as its BCE does).
    best = max(A.MODEL_SCORES, key=lambda s: reported[A.OOD][OUTSIDE][s][A.FLAGGED])
    scores = sorted({cfg.evaluate.score, best})

    server = serve_model(f"models:/{MODEL_NAME}/1", tmp_path, tracking_server.url)
    try:
        url = server.url + "/invocations"
        fashion = ood.load(cfg.paths.ood, OUTSIDE, conf_dir=REPO / "conf" / "data").numpy()
        mnist = read_idx(project / "data/raw/t10k-images-idx3-ubyte")
        served = {s: (_flags(url, fashion, s), _flags(url, mnist, s)) for s in scores}
    finally:
        stop_server(server)
    for score, (outside, inside) in served.items():
        assert (len(outside), len(inside)) == (10_000, len(mnist))
        # The same detector, the same images: the served shares are the reported ones (an image
        # right at the threshold may round either way).
        assert outside.mean() == pytest.approx(reported[A.OOD][OUTSIDE][score][A.FLAGGED], abs=1e-3)
        assert inside.mean() == pytest.approx(reported[A.FLAGGED_TEST][score], abs=1e-3)
        # Few MNIST test images are flagged (the 0.99 quantile of the validation images' scores).
        assert inside.mean() < 0.05, (score, inside.mean())
    # Most Fashion-MNIST images are flagged by the best score.
    assert served[best][0].mean() > 0.5, (best, served[best][0].mean())
