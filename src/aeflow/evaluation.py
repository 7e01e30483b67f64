"""Scoring a trained model on the test set, beside PCA with the same code size."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch
from omegaconf import DictConfig

from aeflow.metrics import ReconstructionMeter
from aeflow.pca import PCA

log = logging.getLogger(__name__)

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


@torch.no_grad()
def score_model(model: torch.nn.Module, batches: Batches) -> dict:
    meter = ReconstructionMeter()
    for x, y in batches:
        meter.update(model(x), x, y)
    return meter.summary()


@torch.no_grad()
def score_pca(pca: PCA, batches: Batches) -> dict:
    meter = ReconstructionMeter()
    for x, y in batches:
        meter.update(pca.decode(pca.encode(x)).view_as(x), x, y)
    return meter.summary()


def fit_pca(train_images: torch.Tensor, n_components: int) -> PCA:
    """PCA on the training split's images (uint8 (N, H, W)), pixels scaled to [0, 1]."""
    return PCA(n_components).fit(train_images.double() / 255.0)


def evaluate(cfg: DictConfig, model: torch.nn.Module, datamodule) -> dict:
    """Test-set metrics of `model` and of PCA at the same code size."""
    datamodule.setup("test")
    pca = fit_pca(datamodule.splits["train"][0], int(cfg.model.latent_dim))
    results = {
        "latent_dim": int(cfg.model.latent_dim),
        "test": score_model(model, datamodule.test_dataloader()),
        "pca": score_pca(pca, datamodule.test_dataloader()),
    }
    log.info("test squared error per image: model %.3f, PCA %.3f",
             results["test"]["sq_err_per_image"], results["pca"]["sq_err_per_image"])
    return results
