"""Inspection of an MVTec-layout test split: anomaly maps of a model and of the PCA baseline, scored.

`evaluate_inspection` runs the test images through each reconstruction once per
batch, makes every configured map from it (aeflow.evaluation.anomaly_maps) and
counts them into a PixelAccumulator (aeflow.evaluation.pixel_metrics): memory
stays one batch of maps plus fixed-size counts, however many test images there are.
The PCA baseline is fitted on the training split (a seeded subsample of at most
`pca_fit_images`), through the images' Gram matrix, so that its memory grows with
the subsample and the pixels, never with pixels squared.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch

from aeflow.errors import ConfigError
from aeflow.evaluation.anomaly import as_float
from aeflow.evaluation.anomaly_maps import MAP_KINDS, MapSettings, Reconstruct, batched_maps, image_scores
from aeflow.evaluation.pca import PCA, one_thread
from aeflow.evaluation.pixel_metrics import PixelAccumulator, flatten

log = logging.getLogger(__name__)

MODEL, BASELINE = "ae", "pca"  # the metric name prefixes: ae_ssim/all/aupro, pca_l2/scratch/...


@dataclass(frozen=True)
class InspectionConfig:
    """Map and metric settings (the config node `evaluate.inspection`).

    maps: the map kinds scored (l2, ssim); ssim_window: the SSIM window's side (odd);
    smoothing_sigma: Gaussian smoothing of each map in pixels (0: none); image_score:
    max or top_k; top_k: the share of pixels top_k averages; n_bins: the bins of
    the pixel metrics (their error bound shrinks with more); pca_components and
    pca_fit_images: the PCA baseline; batch_size: test images per batch.
    """

    # No defaults here: they live in conf/config.yaml (evaluate.inspection), the one place for them.
    maps: tuple[str, ...]
    ssim_window: int
    smoothing_sigma: float
    image_score: str
    top_k: float
    n_bins: int
    pca_components: int
    pca_fit_images: int
    batch_size: int

    @classmethod
    def from_mapping(cls, node: Mapping[str, Any] | None) -> InspectionConfig:
        """From a config node; an unknown key is an error naming the allowed ones."""
        node = dict(node or {})
        allowed = [f.name for f in fields(cls)]
        unknown = sorted(set(node) - set(allowed))
        if unknown:
            raise ConfigError(f"evaluate.inspection: unknown key(s) {unknown}; allowed: {', '.join(allowed)}")
        missing = [k for k in allowed if k not in node]
        if missing:
            raise ConfigError(f"evaluate.inspection: missing key(s) {missing} (conf/config.yaml sets each)")
        if "maps" in node:
            node["maps"] = tuple(node["maps"])
        out = cls(**node)
        out.settings()  # checks every map's settings now, not after a model has run
        for key in ("n_bins", "pca_components", "pca_fit_images", "batch_size"):
            if getattr(out, key) < 1:
                raise ConfigError(f"evaluate.inspection.{key}={getattr(out, key)}: must be >= 1")
        return out

    def settings(self) -> tuple[MapSettings, ...]:
        if not self.maps:
            raise ConfigError(f"evaluate.inspection.maps=[]: name at least one of {', '.join(MAP_KINDS)}")
        return tuple(
            MapSettings(kind, self.ssim_window, self.smoothing_sigma, self.image_score, self.top_k)
            for kind in self.maps
        )


def fit_pca_baseline(train_images: torch.Tensor, n_components: int, max_images: int, seed: int = 0) -> PCA:
    """PCA of (a seeded subsample of) uint8 training images (N, H, W) or (N, C, H, W).

    Fitted through the (n, n) Gram matrix of the centred images, n <= max_images: the same
    components as PCA.fit's D x D covariance, in memory n * D instead of D * D.
    """
    n = len(train_images)
    rows = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[: min(n, max_images)]
    x = as_float(train_images[rows.sort().values.numpy()]).flatten(1).double()  # (n, D)
    k = min(n_components, len(x) - 1)
    if k < 1:
        raise ConfigError(f"the training split has {n} image(s); the PCA baseline needs at least 2")
    mean = x.mean(0)
    x -= mean
    with one_thread():
        eigvals, eigvecs = torch.linalg.eigh(x @ x.T)  # ascending; (n, n)
    eigvals, eigvecs = eigvals.flip(0)[:k].clamp_min(1e-12), eigvecs.flip(1)[:, :k]
    pca = PCA(k)
    pca.mean = mean
    pca.components = (x.T @ eigvecs) / eigvals.sqrt()  # (D, k), orthonormal columns
    pca.explained_variance = eigvals / (len(x) - 1)
    return pca


def pca_reconstruct(pca: PCA) -> Reconstruct:
    """The PCA's projection as a reconstruction: float (B, C, H, W) -> same shape."""
    return lambda x: pca.decode(pca.encode(x)).float().view_as(x)


@dataclass
class InspectionResult:
    """Metrics per method ('ae_ssim', 'pca_l2', ...) and test type, and the flat names for files."""

    metrics: dict[str, dict[str, dict[str, float]]]
    image_scores: dict[str, np.ndarray]  # (N,) per method, in test order: for the report's extremes
    # Per method: the image ROC, pixel ROC and PRO curve points (PixelAccumulator.curves), for the report
    curves: dict[str, dict] = field(default_factory=dict)

    def flat(self) -> dict[str, float]:
        return {
            name: value for method, m in self.metrics.items() for name, value in flatten(m, method).items()
        }


def evaluate_inspection(
    reconstructs: Mapping[str, Reconstruct],
    images: torch.Tensor,
    masks: torch.Tensor,
    labels: torch.Tensor,
    types: list[str],
    config: InspectionConfig,
) -> InspectionResult:
    """Score the test split for each reconstruction (e.g. {'ae': model, 'pca': PCA}) and map kind.

    images: uint8 (N, H, W) or (N, C, H, W); masks: uint8 (N, H, W) in {0, 1}; labels (N,)
    index `types` (0: good). Tensors may be memory-mapped: one batch at a time is read.
    """
    settings = config.settings()
    out: dict[str, dict[str, dict[str, float]]] = {}
    scores: dict[str, np.ndarray] = {}
    curves: dict[str, dict] = {}
    for prefix, reconstruct in reconstructs.items():
        accumulators = [PixelAccumulator(types, config.n_bins) for _ in settings]
        for rows, _, _, maps in batched_maps(reconstruct, images, settings, config.batch_size):
            for acc, s, m in zip(accumulators, settings, maps, strict=True):
                acc.add(m, masks[rows], labels[rows], image_scores(m, s))
        for acc, s in zip(accumulators, settings, strict=True):
            method = f"{prefix}_{s.kind}"
            out[method] = acc.metrics()
            scores[method] = np.concatenate(acc.scores)
            curves[method] = acc.curves()
            log.info("%s: %s", method, {k: round(v, 4) for k, v in out[method]["all"].items()})
    return InspectionResult(out, scores, curves)


def inspect_model(
    model: torch.nn.Module, splits: Any, config: InspectionConfig, seed: int = 0
) -> InspectionResult:
    """The evaluate stage's inspection for `data=mvtec`: `model` (an AutoencoderNet: forward
    returns reconstructions in [0, 1]) and the PCA baseline on `splits` (aeflow.data.mvtec.MVTecSplits)."""
    splits.setup()
    train, _ = splits.splits["train"]
    images, labels = splits.splits["test"]
    pca = fit_pca_baseline(train, config.pca_components, config.pca_fit_images, seed)
    reconstructs = {MODEL: model.eval(), BASELINE: pca_reconstruct(pca)}
    return evaluate_inspection(reconstructs, images, splits.test_masks(), labels, splits.defect_types, config)


def extremes(scores: np.ndarray, labels: np.ndarray, types: list[str], n: int = 1) -> dict[str, dict]:
    """Test-image indices the report draws, per type: `flagged`, the `n` highest scores, and
    `missed`, the `n` lowest. For a defect type the highest are its clearest finds and the lowest
    its worst misses; for `good` the highest are its worst false alarms."""
    out = {}
    for label, kind in enumerate(types):
        rows = np.flatnonzero(labels == label)
        order = rows[np.argsort(-scores[rows], kind="stable")]
        if len(order):
            out[kind] = {"flagged": order[:n].tolist(), "missed": order[::-1][:n].tolist()}
    return out
