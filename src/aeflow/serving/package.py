"""Packaging: the trained model as it is served, built from the best checkpoint.

`build` writes, in one folder (`paths.package`): the network's weights (a state dict), the
config it was trained with (the train stage's, credentials redacted), the anomaly detector (the code Gaussian
and each score's threshold, as JSON) and the encoder, decoder and anomaly map as ONNX files.
`log_to_mlflow` puts them into the training's MLflow run as the MLflow model
(aeflow.serving.pyfunc) and the ONNX artifacts. None of it changes the model, so the package
stage reruns when serving code changes, and training does not.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from aeflow.io import atomic_path, copy_file
from aeflow.models.components import AutoencoderNet
from aeflow.serving import onnx_export
from aeflow.serving import pyfunc as serving
from aeflow.tracking import runs as tracking

log = logging.getLogger(__name__)

Split = tuple[torch.Tensor, torch.Tensor]  # images uint8 (N, H, W) or (N, C, H, W), labels int64 (N,)

# The files of the package folder (`paths.package`).
WEIGHTS, CONFIG, DETECTOR, ONNX = "weights.pt", "config.yaml", "detector.json", "onnx"
EXAMPLE_IMAGES = 4  # validation images logged as the MLflow model's input example


@dataclass
class Package:
    folder: Path
    example: np.ndarray  # float32 (EXAMPLE_IMAGES, C*H*W) in [0, 1], the served input's layout

    @property
    def weights(self) -> Path:
        return self.folder / WEIGHTS

    @property
    def config(self) -> Path:
        return self.folder / CONFIG

    @property
    def detector(self) -> Path:
        return self.folder / DETECTOR

    @property
    def onnx(self) -> Path:
        return self.folder / ONNX


def build(
    cfg: DictConfig,
    model: AutoencoderNet,
    config_file: str | Path,
    splits: Mapping[str, Split],
    folder: str | Path,
) -> Package:
    """Write the package of `model` (trained as `cfg` describes; `config_file`: its resolved config,
    which the served model is rebuilt from) into `folder`; the detector is fitted on the uint8
    'train' (code Gaussian) and 'val' (thresholds) splits."""
    folder = Path(folder)
    model.eval()
    package = Package(folder=folder, example=example_inputs(splits["val"][0]))
    with atomic_path(package.weights) as tmp:
        torch.save(model.state_dict(), tmp)
    copy_file(config_file, package.config)
    serving.fit_detector(cfg, model, splits).write(package.detector)
    # The encoder, decoder and anomaly map as ONNX files too, for runtimes without PyTorch.
    onnx_export.export(model, package.onnx, model.image_shape, serving.map_settings(cfg))
    log.info("package: %s", folder)
    return package


def example_inputs(val_images: torch.Tensor) -> np.ndarray:
    """The first validation images as the served model takes them: float32 rows in [0, 1]."""
    images = val_images[:EXAMPLE_IMAGES]
    return (images.reshape(len(images), -1).float() / 255.0).cpu().numpy()


def log_to_mlflow(model: AutoencoderNet, package: Package) -> None:
    """The package into the active MLflow run: the MLflow model and the ONNX files."""
    import mlflow

    serving.log_model(model, package.config, package.weights, package.example, package.detector)
    mlflow.log_artifacts(str(package.onnx), artifact_path="onnx")


def from_config(cfg: DictConfig) -> Package:
    """The package stage's work: the package of the best checkpoint in `paths.package`, logged
    to the training's MLflow run (`paths.run_info`) when `mlflow.log_model` is set."""
    from aeflow.data.splits import splits_from_config
    from aeflow.models.weights import BEST, checkpoint_path, config_path, load_weights

    model = load_weights(cfg, checkpoint_path(cfg, BEST))
    built = build(cfg, model, config_path(cfg), splits_from_config(cfg), cfg.paths.package)
    if cfg.mlflow.log_model:
        with tracking.resume_run(cfg.paths.run_info, cfg.mlflow.tracking_uri):
            log_to_mlflow(model, built)
    return built
