"""The logged model, loaded as MLflow loads it (from code, no pickle), scores and flags anomalies
with the detector fitted on the training and validation splits."""

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from aeflow.evaluation.anomaly import MODEL_SCORES, DetectorState, as_float


def _tiny_cfg(root: Path):
    """The real config on tiny synthetic data under `root` (conftest's tiny_cfg, module-scoped here:
    one training serves every test of this file)."""
    from aeflow.config.params import compose
    from tests.conftest import make_synthetic_idx

    cfg = compose(
        [
            "trainer.max_epochs=2",
            "trainer.enable_progress_bar=false",
            "data.batch_size=16",
            "data.val_size=20",
        ]
    )
    cfg.data.files = make_synthetic_idx(root / "data")
    cfg.paths.data = str(root / "data")
    for key in ("checkpoints", "run_info", "train_metrics", "loss_curve", "resume", "package"):
        cfg.paths[key] = str(root / "out" / cfg.paths[key])
    cfg.mlflow.tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    return cfg


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """A tiny trained model logged to a SQLite store: (model folder, config, the data splits)."""
    from aeflow.config.instantiate import instantiate_datamodule
    from aeflow.serving import package
    from aeflow.training.train import train

    root = tmp_path_factory.mktemp("served")
    cfg = _tiny_cfg(root)
    cfg.mlflow.log_model = True
    cfg.evaluate.threshold_quantile = 0.9
    run_id = train(cfg).run_id
    package.from_config(cfg)
    mlflow.set_tracking_uri(cfg.mlflow.tracking_uri)
    folder = Path(mlflow.artifacts.download_artifacts(f"runs:/{run_id}/model", dst_path=str(root / "m")))
    dm = instantiate_datamodule(cfg)
    dm.setup()
    return folder, cfg, dm.splits


def _flat(images: torch.Tensor) -> np.ndarray:
    return as_float(images).reshape(len(images), -1).numpy()


def test_the_model_is_logged_from_code_with_its_detector(logged, monkeypatch):
    folder, cfg, _ = logged
    assert (folder / "model_code.py").is_file() and not list(folder.rglob("*.pkl"))
    detector = json.loads(next(folder.rglob("detector.json")).read_text())
    assert detector["quantile"] == 0.9 and set(detector["thresholds"]) == set(MODEL_SCORES)
    # Loading never needs pickle: MLflow refuses pickled models when this is off.
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    mlflow.pyfunc.load_model(str(folder))


def test_scores_and_flags_follow_the_validation_threshold(logged):
    folder, _, splits = logged
    model = mlflow.pyfunc.load_model(str(folder))
    val = _flat(splits["val"][0])
    state = DetectorState.load(next(folder.rglob("detector.json")))
    for score in MODEL_SCORES:
        scores = model.predict(val, params={"output": "score", "score": score})
        flags = model.predict(val, params={"output": "is_anomaly", "score": score})
        assert scores.shape == (len(val),) and flags.dtype == bool
        np.testing.assert_array_equal(flags, scores > state.thresholds[score])
        # About 1 - quantile of the validation images are above their own 0.9 quantile.
        assert flags.mean() == pytest.approx(0.1, abs=0.051), score
    # Without `score`, the one the model was logged with (evaluate.score).
    np.testing.assert_allclose(
        model.predict(val, params={"output": "score"}),
        model.predict(val, params={"output": "score", "score": state.score}),
    )


def test_inverted_images_score_higher_and_bad_params_are_refused(logged):
    folder, _, splits = logged
    model = mlflow.pyfunc.load_model(str(folder))
    test = splits["test"][0]
    normal = model.predict(_flat(test), params={"output": "score", "score": "sq_err"})
    inverted = model.predict(_flat(255 - test), params={"output": "score", "score": "sq_err"})
    assert (inverted > normal).mean() > 0.95
    assert model.predict(_flat(255 - test), params={"output": "is_anomaly", "score": "sq_err"}).mean() > 0.9
    with pytest.raises(Exception, match="score='pca': allowed: sq_err, bce, mahalanobis"):
        model.predict(_flat(test), params={"output": "score", "score": "pca"})


def test_aeflow_encode_writes_the_served_scores_and_flags(logged, tmp_path):
    from omegaconf import OmegaConf

    from aeflow.serving.encode import main

    folder, cfg, splits = logged
    images = splits["test"][0].numpy()
    np.save(tmp_path / "digits.npy", images)
    params = tmp_path / "params.yaml"
    OmegaConf.save(cfg, params)
    served = mlflow.pyfunc.load_model(str(folder))
    expected = served.predict(_flat(splits["test"][0]), params={"output": "score"})
    checkpoint = Path(cfg.paths.checkpoints) / "best.ckpt"
    for source in (["--model", str(folder)], ["--checkpoint", str(checkpoint), "--params", str(params)]):
        out = tmp_path / source[0].strip("-")
        main([str(tmp_path / "digits.npy"), "--out", str(out), "--scores", *source])
        scores, flags = np.load(out / "scores.npy"), np.load(out / "is_anomaly.npy")
        np.testing.assert_allclose(scores, expected, rtol=1e-6)
        state = DetectorState.load(next(folder.rglob("detector.json")))
        np.testing.assert_array_equal(flags, scores > state.thresholds[state.score])


def test_the_package_holds_what_is_served_and_the_encode_command_finds_its_detector(logged):
    from aeflow.models.weights import BEST, checkpoint_path
    from aeflow.serving import package
    from aeflow.serving.encode import detector_path

    folder, cfg, _ = logged
    served = Path(cfg.paths.package)
    assert sorted(p.name for p in served.iterdir()) == sorted(
        [package.CONFIG, package.DETECTOR, package.ONNX, package.WEIGHTS]
    )
    assert sorted(p.name for p in (served / package.ONNX).iterdir()) == [
        "anomaly_map.onnx",
        "decoder.onnx",
        "encoder.onnx",
    ]
    # The logged MLflow model carries the package's detector.
    assert next(folder.rglob("detector.json")).read_text() == (served / package.DETECTOR).read_text()
    # The pipeline's best checkpoint is served with the package's detector; another checkpoint
    # with the one beside it.
    assert detector_path(cfg, checkpoint_path(cfg, BEST)) == served / package.DETECTOR
    assert detector_path(cfg, Path("/elsewhere/best.ckpt")) == Path("/elsewhere") / package.DETECTOR
