"""The baselines every model is compared with, from the data alone: PCA fitted on the training
split (as many components as the code has units, at least 2 for the visualize stage's maps),
PCA's and the raw pixels' test metrics and probes, and PCA's anomaly score of every image the
anomaly protocols score.

None of it depends on the trained model, so the baselines stage computes it once per data and
config and DVC keeps it across experiments; the evaluate stage merges it into its metrics and
the visualize stage draws from the PCA fit.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from aeflow.config.schema import EvaluateConfig
from aeflow.data.folder import has_labels
from aeflow.errors import DataError
from aeflow.evaluation import metrics as M
from aeflow.evaluation import protocols, streaming
from aeflow.evaluation.pca import PCA
from aeflow.evaluation.scoring import (
    PCA_KEY,
    PIXELS,
    fit_pca,
    pca_components,
    probe_data,
    score_codes,
)
from aeflow.io import atomic_path, write_json

log = logging.getLogger(__name__)

Split = tuple[torch.Tensor, torch.Tensor]  # images uint8 (N, H, W) or (N, C, H, W), labels int64 (N,)

# The `evaluate:` settings the baselines depend on.
SETTINGS = ("probe_train_size", "knn_k", "logreg_max_iter", "corruptions", "ood")
# The files of the baselines folder (`paths.baselines`).
KNN_CHUNK = 1000  # M.knn_predict's default chunk of test rows
PCA_FILE, METRICS_FILE, SCORES_FILE = "pca.npz", "metrics.json", "anomaly_scores.npz"


@dataclass
class Baselines:
    pca: PCA  # fitted on the training split, `pca_components(latent_dim)` components
    # {PCA_KEY: PCA's test metrics, PIXELS: the raw pixels' probe accuracies (labelled data only)}
    metrics: dict
    by_digit: dict  # PCA's per-digit test metrics (empty for unlabelled data)
    # PCA's anomaly score per image: protocols.VAL, anomaly.NORMAL and '<protocol>/<set>'
    anomaly_scores: dict[str, torch.Tensor]

    def write(self, folder: str | os.PathLike) -> None:
        """The three files of the folder, each written atomically (float64 arrays, exact JSON floats)."""
        folder = Path(folder)
        self.pca.write(folder / PCA_FILE)
        write_json(folder / METRICS_FILE, {"metrics": self.metrics, "by_digit": self.by_digit})
        with atomic_path(folder / SCORES_FILE) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **{k: v.numpy() for k, v in self.anomaly_scores.items()})

    @classmethod
    def load(cls, folder: str | os.PathLike) -> Baselines:
        """What `write` wrote."""
        folder = Path(folder)
        missing = [f for f in (METRICS_FILE, SCORES_FILE, PCA_FILE) if not (folder / f).is_file()]
        if missing:
            raise DataError(
                f"{folder}/ lacks {', '.join(missing)}: the baselines stage writes them "
                "(`dvc repro baselines`, or `python -m aeflow.stages.baselines` outside DVC)"
            )
        saved = json.loads((folder / METRICS_FILE).read_text())
        with np.load(folder / SCORES_FILE, allow_pickle=False) as data:
            scores = {k: torch.from_numpy(data[k]) for k in data.files}
        return cls(load_pca(folder), saved["metrics"], saved["by_digit"], scores)


def load_pca(folder: str | os.PathLike) -> PCA:
    """The PCA fit of a baselines folder."""
    return PCA.load(Path(folder) / PCA_FILE)


def compute(
    pca: PCA,
    latent_dim: int,
    splits: Mapping[str, Split],
    config: EvaluateConfig,
    seed: int,
    anomaly_sets: Mapping,
) -> Baselines:
    """The baselines of uint8 `splits` ('train', 'val', 'test'; on the CPU) for codes of
    `latent_dim` units; `pca` is fitted on the training split with at least `latent_dim`
    components; `anomaly_sets`: `protocols.anomaly_sets`'s keyword arguments."""
    train, test = splits["train"], splits["test"]
    labelled = has_labels(test[1])
    first = pca.first(latent_dim)
    _, train_x, train_y, test_images, test_y = probe_data(train, test, config, seed)

    def pca_encode(x: torch.Tensor) -> torch.Tensor:
        return first.encode(x).float()

    def pca_decode(z: torch.Tensor) -> torch.Tensor:
        return first.decode(z).float()

    summary, by_digit, _ = score_codes(
        pca_encode, pca_decode, train_x, train_y, test_images, test_y, config, labelled
    )
    metrics = {PCA_KEY: summary}
    if labelled:
        metrics[PIXELS] = pixel_probes(train_x, train_y, test_images, test_y, config)
    normal, _, outsides = protocols.anomaly_sets(splits, **anomaly_sets)
    scores = protocols.pca_scores_of_sets(first, splits["val"][0], normal, outsides)
    log.info("PCA (%d components): test squared error per image %.3f", latent_dim, summary[M.SQ_ERR])
    return Baselines(pca=pca, metrics=metrics, by_digit=by_digit, anomaly_scores=scores)


def pixel_probes(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_images: torch.Tensor,
    test_y: torch.Tensor,
    config: EvaluateConfig,
) -> dict[str, float]:
    """k-NN and logistic-regression accuracy on raw pixels: fitted on the float probe subsample,
    the uint8 test images predicted batch by batch."""
    batch = streaming.rows_per_batch(streaming.pixels_of(test_images))
    # Whole k-NN chunks per batch: the distances are computed on the same rows as in one call.
    batch = batch - batch % KNN_CHUNK if batch > KNN_CHUNK else batch
    logreg = M.logreg_classifier(train_x, train_y, config.logreg_max_iter)
    knn = streaming.per_image(lambda x: M.knn_predict(train_x, train_y, x, config.knn_k), test_images, batch)
    logreg = streaming.per_image(logreg, test_images, batch)
    return {
        M.KNN: float((knn == test_y).double().mean()),
        M.LOGREG: float((logreg == test_y).double().mean()),
    }


def baseline_settings(cfg: DictConfig) -> EvaluateConfig:
    """The `evaluate:` keys the baselines depend on (`SETTINGS`, the stage's params in dvc.yaml);
    the other fields keep the schema's values and are not used here."""
    section = cfg.get("evaluate") or {}
    chosen = {k: section[k] for k in SETTINGS if k in section}
    return replace(EvaluateConfig(), **OmegaConf.to_container(OmegaConf.create(chosen), resolve=True))


def from_config(cfg: DictConfig, splits: Mapping[str, Split]) -> Baselines:
    """`compute` as the baselines stage runs it, on the splits the evaluate stage scores."""
    splits = protocols.cpu(splits)
    latent_dim = int(cfg.model.latent_dim)
    config = baseline_settings(cfg)
    protocols.check_corruptions(config.corruptions)
    pca = fit_pca(splits["train"][0], pca_components(latent_dim))
    anomaly_sets = protocols.sets_from_config(cfg, splits, config)
    return compute(pca, latent_dim, splits, config, int(cfg.seed), anomaly_sets)
