"""The MLflow model: an autoencoder served as a pyfunc that encodes, reconstructs, scores
images as anomalies, or maps where in each image the anomaly lies.

Weights travel as a state dict loaded with `torch.load(weights_only=True)`, the network
is rebuilt from the saved config, the anomaly detector is JSON, and the model itself is
logged from code (model_code.py), so loading a model never unpickles anything.
"""

from __future__ import annotations

import importlib.metadata
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
import torch
from mlflow.models import infer_signature

if TYPE_CHECKING:
    from aeflow.evaluation.anomaly_maps import MapSettings

log = logging.getLogger(__name__)

OUTPUTS = ("reconstruction", "code", "score", "is_anomaly", "anomaly_map")
DETECTOR = "detector"  # artifact: aeflow.evaluation.anomaly.DetectorState as JSON
MODEL_CODE = Path(__file__).with_name("model_code.py")
REQUIREMENTS = ("torch", "hydra-core", "omegaconf", "mlflow", "numpy", "scipy")  # loading needs no Lightning


class AutoencoderPyfunc(mlflow.pyfunc.PythonModel):
    """Input: float32 images (N, C*H*W) in [0, 1] of the trained shape (MNIST: (N, 784); RGB
    24x32: (N, 2304), channels first). Param `output`: 'reconstruction' (N, C*H*W),
    'code' (N, latent_dim), 'score' (N,) anomaly scores, 'is_anomaly' (N,) booleans (score above
    the threshold chosen on the validation split) or 'anomaly_map' (N, H, W) float32 per-pixel maps
    in [0, 1] (the first map kind of the run's `evaluate.inspection`); param `score`: which anomaly
    score (sq_err, bce, mahalanobis; default: the one the model was logged with).

    Served by `mlflow models serve`: POST /invocations
    {"inputs": [[...784 floats...]], "params": {"output": "is_anomaly"}}.
    """

    def load_context(self, context: Any) -> None:
        from omegaconf import OmegaConf

        from aeflow.config.instantiate import instantiate_network

        cfg = OmegaConf.load(context.artifacts["config"])
        self.model = instantiate_network(cfg)
        self.model.load_state_dict(torch.load(context.artifacts["weights"], weights_only=True))
        self.model.eval()
        self.detector = None
        if DETECTOR in context.artifacts:
            from aeflow.evaluation.anomaly import DetectorState

            self.detector = DetectorState.load(context.artifacts[DETECTOR])
        self.map_settings = map_settings(cfg)

    def predict(self, context, model_input, params=None):  # no hints: MLflow validates by them
        params = params or {}
        output = params.get("output", "reconstruction")
        return predict(self.model, model_input, output, self.detector, params.get("score"), self.map_settings)


def map_settings(cfg: Any) -> MapSettings | None:
    """The MapSettings of output=anomaly_map: the first map kind of `cfg.evaluate.inspection`, with
    its window and smoothing, as the evaluate stage scores them; None for a config without that node."""
    from aeflow.errors import ConfigError
    from aeflow.evaluation.inspection import InspectionConfig

    node = (cfg.get("evaluate") or {}).get("inspection")
    if node is None:
        return None
    try:
        return InspectionConfig.from_mapping(node).settings()[0]
    except ConfigError as exc:  # a model packaged by an older aeflow still serves its other outputs
        log.warning("No anomaly maps from this model: %s", exc)
        return None


def as_images(model_input: Any, image_shape: tuple[int, ...] = (1, 28, 28)) -> torch.Tensor:
    """Values in [0, 1] -> float32 (N, C, H, W) of `image_shape` (C, H, W), as in training.

    Accepted: (N, C*H*W) rows (channels first, as the logged signature has them), (N, C, H, W),
    and for grey models (N, H, W).
    """
    x = torch.as_tensor(np.asarray(model_input, dtype=np.float32))
    channels, height, width = image_shape
    if x.ndim == 2 and x.shape[1] == channels * height * width:
        x = x.reshape(len(x), channels, height, width)
    if x.ndim == 3 and channels == 1:
        x = x.unsqueeze(1)
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(image_shape):
        grey = ", (N, H, W)" if channels == 1 else ""
        raise ValueError(
            f"expected images of the trained shape C={channels}, H={height}, W={width}: "
            f"(N, {channels * height * width}), (N, {channels}, {height}, {width}){grey}; "
            f"got shape {tuple(x.shape)}"
        )
    return x


def predict(
    model: torch.nn.Module,
    model_input: Any,
    output: str = "reconstruction",
    detector: Any = None,
    score: str | None = None,
    map_settings: MapSettings | None = None,
) -> np.ndarray:
    """Codes (N, latent_dim), flattened reconstructions (N, C*H*W) in [0, 1], anomaly scores (N,),
    anomaly flags (N,) or anomaly maps (N, H, W) for images in [0, 1]; `detector`: a DetectorState,
    for scores and flags; `map_settings`: an aeflow.evaluation.anomaly_maps.MapSettings, for maps."""
    if output not in OUTPUTS:
        raise ValueError(f"params.output={output!r}: allowed: {', '.join(OUTPUTS)}")
    x = as_images(model_input, model.image_shape)
    with torch.no_grad():
        if output in ("score", "is_anomaly"):
            if detector is None:
                raise ValueError(
                    f"params.output={output}: this model was logged without an anomaly detector; "
                    "train it again (the train stage logs one with every model)"
                )
            answer = detector.scores if output == "score" else detector.is_anomaly
            return answer(model.encode, model.decode, x, score).numpy()
        if output == "anomaly_map":
            return _anomaly_map(model, x, map_settings)
        if output == "code":
            return model.encode(x).reshape(len(x), -1).numpy()
        return model(x).reshape(len(x), -1).numpy()


def _anomaly_map(model: torch.nn.Module, x: torch.Tensor, settings: MapSettings | None) -> np.ndarray:
    """(N, H, W) float32 maps of images x (N, C, H, W), made as the evaluate stage makes them."""
    from aeflow.evaluation.anomaly_maps import model_map

    if settings is None:
        raise ValueError(
            "params.output=anomaly_map: this model's config has no evaluate.inspection (the map's "
            "kind, window and smoothing); package it again from a config composed from conf/"
        )
    return model_map(model, x, settings).numpy()


def pinned_requirements() -> list[str]:
    # Explicit pins: MLflow's own inference loads the model in a subprocess (slow).
    return [f"{name}=={importlib.metadata.version(name)}" for name in REQUIREMENTS]


def log_model(
    module: torch.nn.Module,
    config_path: str | Path,
    weights_path: str | Path,
    example: np.ndarray,
    detector_path: str | Path | None = None,
) -> Any:
    """Log `module` (already saved as `weights_path`) to the active run as an MLflow model, from
    code (no pickle); `detector_path`: its anomaly detector (JSON), for output=score/is_anomaly."""
    import aeflow

    module.eval()
    recon = predict(module, example)
    params = {"output": "reconstruction"}
    artifacts = {"weights": str(weights_path), "config": str(config_path)}
    if detector_path is not None:
        from aeflow.evaluation.anomaly import DetectorState

        params["score"] = DetectorState.load(detector_path).score
        artifacts[DETECTOR] = str(detector_path)
    signature = infer_signature(example, recon, params=params)
    return mlflow.pyfunc.log_model(
        name="model",
        python_model=str(MODEL_CODE),
        artifacts=artifacts,
        code_paths=[str(Path(aeflow.__file__).parent)],
        signature=signature,
        input_example=example,
        pip_requirements=pinned_requirements(),
    )


def fit_detector(cfg: Any, model: torch.nn.Module, splits: Any) -> Any:
    """The served model's anomaly detector: the code Gaussian of the training split and each
    score's `evaluate.threshold_quantile` of the validation split (the evaluate stage fits the
    same, so the shares it reports flagged are the served model's).

    `splits`: {'train', 'val': (uint8 images, labels)}, memory-mapped or not: the images are
    made float one batch at a time (aeflow.evaluation.streaming)."""
    from aeflow.config.schema import EvaluateConfig
    from aeflow.evaluation.anomaly import fit_detector

    knobs = cfg.get("evaluate") or {}
    defaults = EvaluateConfig()
    model.eval()
    return fit_detector(
        model.encode,
        model.decode,
        splits["train"][0],
        splits["val"][0],
        knobs.get("threshold_quantile", defaults.threshold_quantile),
        knobs.get("score", defaults.score),
    )
