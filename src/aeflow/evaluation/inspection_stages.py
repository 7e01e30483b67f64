"""The baselines and evaluate stages for `data=mvtec` (docs/inspection.md).

An MVTec-layout category has defect types, not classes, so the label probes and the
shifted-copy protocols of the other data do not apply. Instead:
- baselines: the PCA-residual baseline, fitted on the training split (`fit_pca_baseline`),
  in `paths.baselines`;
- evaluate: the anomaly maps of the model and of that PCA, scored per defect type and
  overall (aeflow.evaluation.inspection), plus the test images the report draws.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf

from aeflow.data.mvtec import MVTecSplits, spec_from_config
from aeflow.data.schema import MVTEC_DATA
from aeflow.evaluation.inspection import (
    BASELINE,
    MODEL,
    InspectionConfig,
    evaluate_inspection,
    extremes,
    fit_pca_baseline,
    pca_reconstruct,
)
from aeflow.evaluation.pca import PCA
from aeflow.evaluation.pixel_metrics import ALL, flatten

log = logging.getLogger(__name__)

INSPECTION = "inspection"  # the section of metrics/evaluate.json and of the details
PCA_FILE = "pca.npz"  # in paths.baselines, as for the other data
# The data keys that describe the pack (aeflow.data.pack.PackSpec): only these are read.
SPEC_KEYS = ("image_size", "channels", "resize", "val_size", "test_size", "split_seed")


def applies(cfg: Any) -> bool:
    """Whether the run's data is an MVTec-layout category (`data=mvtec`)."""
    return cfg.data.get("_target_") == MVTEC_DATA


def settings(cfg: Any) -> InspectionConfig:
    """`evaluate.inspection` as its dataclass, every map setting checked."""
    node = OmegaConf.to_container(cfg.evaluate.inspection, resolve=True)
    return InspectionConfig.from_mapping(node)


def packed(cfg: Any) -> MVTecSplits:
    """The packed splits and masks in `paths.data`."""
    spec = spec_from_config({key: cfg.data[key] for key in SPEC_KEYS})
    return MVTecSplits(cfg.paths.data, spec)


def write_baseline(cfg: Any) -> PCA:
    """The baselines stage: the PCA baseline of the training split into `paths.baselines`.

    Reads only the PCA's two settings, so that changing a map setting keeps this stage's output."""
    node = cfg.evaluate.inspection
    splits = packed(cfg)
    splits.setup()
    pca = fit_pca_baseline(
        splits.splits["train"][0], int(node.pca_components), int(node.pca_fit_images), int(cfg.seed)
    )
    folder = Path(cfg.paths.baselines)
    folder.mkdir(parents=True, exist_ok=True)
    pca.write(folder / PCA_FILE)
    log.info("PCA baseline: %d components of %d training images", pca.k, len(splits.splits["train"][1]))
    return pca


def evaluate(cfg: Any, model: torch.nn.Module) -> tuple[dict, dict]:
    """The evaluate stage: (metrics, details) of `model` and the PCA baseline on the test split.

    metrics: {'inspection': {'<ae|pca>_<map>': {'all' | defect type: {metric: value}}}};
    details: the test types, their counts and, per method, the test rows the report draws
    (aeflow.evaluation.inspection.extremes)."""
    config = settings(cfg)
    splits = packed(cfg)
    splits.setup()
    images, labels = splits.splits["test"]
    pca = PCA.load(Path(cfg.paths.baselines) / PCA_FILE)
    reconstructs = {MODEL: model.eval(), BASELINE: pca_reconstruct(pca)}
    types = splits.defect_types
    result = evaluate_inspection(reconstructs, images, splits.test_masks(), labels, types, config)
    labels_np = labels.numpy()
    details = {
        "types": types,
        "test_images": {kind: int((labels_np == i).sum()) for i, kind in enumerate(types)},
        "extremes": {method: extremes(s, labels_np, types) for method, s in result.image_scores.items()},
        "scores": {method: np.round(s, 6).tolist() for method, s in result.image_scores.items()},
        "settings": OmegaConf.to_container(cfg.evaluate.inspection, resolve=True),
        "curves": result.curves,  # the report's ROC and PRO figures
    }
    return {INSPECTION: result.metrics}, {INSPECTION: details}


def flat(metrics: dict) -> dict[str, float]:
    """The metrics as MLflow names: `inspection/ae_ssim/scratch/aupro`."""
    return {
        f"{INSPECTION}/{name}": value
        for method, per_type in metrics[INSPECTION].items()
        for name, value in flatten(per_type, method).items()
    }


def headline(metrics: dict) -> tuple[str, float]:
    """The run description's figure: the model's AUPRO over every defect type, of its first map."""
    method = next(m for m in metrics[INSPECTION] if m.startswith(f"{MODEL}_"))
    return f"test AUPRO ({method})", metrics[INSPECTION][method][ALL]["aupro"]


def plot_rows(metrics: dict) -> list[dict]:
    """Rows of the per-type DVC plot: AUPRO, pixel and image AUROC per method and type."""
    return [
        {"label": f"{kind} {method}", "type": kind, "method": method}
        | {key: round(values[key], 4) for key in ("aupro", "pixel_auroc", "image_auroc") if key in values}
        for method, per_type in metrics[INSPECTION].items()
        for kind, values in per_type.items()
    ]
