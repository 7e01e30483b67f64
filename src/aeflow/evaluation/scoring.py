"""What the evaluate and baselines stages share: the names of the metrics file's sections,
the config section as its dataclass, the probes' training subsample, and one encoder/decoder
pair scored on the test set (the autoencoder's, or PCA's at the same code size)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from omegaconf import DictConfig, OmegaConf

from aeflow.config.schema import EvaluateConfig
from aeflow.evaluation import metrics as M
from aeflow.evaluation.pca import PCA

Fn = Callable[[torch.Tensor], torch.Tensor]

MODEL, PCA_KEY, PIXELS, COMPRESSION = "test", "pca", "pixels", "compression"
NAMES = {MODEL: "autoencoder", PCA_KEY: "PCA", PIXELS: "raw pixels"}


def settings(cfg: DictConfig, name: str, schema: type):
    """The `name:` config section as its schema dataclass (defaults where the section is absent)."""
    section = cfg.get(name)
    return schema(**OmegaConf.to_container(section, resolve=True)) if section else schema()


def fit_pca(train_images: torch.Tensor, n_components: int) -> PCA:
    """PCA on the training split's images (uint8 (N, H, W)), pixels scaled to [0, 1]."""
    return PCA(n_components).fit(train_images.double() / 255.0)


def pca_components(latent_dim: int) -> int:
    """Components the baselines stage fits: the code size, and at least 2 for the 2-D maps that
    the visualize stage draws from the same fit."""
    return max(latent_dim, 2)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W) or (N, C, H, W) -> float (N, C, H, W) in [0, 1], as the data module serves them."""
    return (images if images.dim() == 4 else images.unsqueeze(1)).float() / 255.0


@torch.no_grad()
def in_batches(fn: Fn, x: torch.Tensor, batch: int = 2048) -> torch.Tensor:
    return torch.cat([fn(x[i : i + batch]) for i in range(0, len(x), batch)])


def probe_subset(n_train: int, size: int, seed: int) -> torch.Tensor:
    """Sorted indices of a seeded subsample of `size` training images (all if size >= n_train)."""
    if size >= n_train:
        return torch.arange(n_train)
    perm = torch.randperm(n_train, generator=torch.Generator().manual_seed(seed))
    return perm[:size].sort().values


def probe_data(
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    config: EvaluateConfig,
    seed: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(probe subsample indices, train_x, train_y, test_x, test_y): uint8 splits as the probes see
    them, images float (N, C, H, W) in [0, 1]."""
    pick = probe_subset(len(train[1]), config.probe_train_size, seed)
    return pick, to_float(train[0][pick]), train[1][pick], to_float(test[0]), test[1]


@torch.no_grad()
def score_codes(
    encode: Fn,
    decode: Fn,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    config: EvaluateConfig,
    labelled: bool = True,
):
    """Everything measured on one encoder/decoder pair; returns (summary, by_digit, sq_err per image).

    Without labels (`labelled` false) there are no probes and `by_digit` is empty."""
    codes = in_batches(encode, test_x)
    recon = in_batches(decode, codes).view_as(test_x)
    summary, by_digit, sq = M.reconstruction_metrics(recon, test_x, test_y)
    train_codes = in_batches(encode, train_x)
    if labelled:
        summary[M.KNN] = M.knn_accuracy(train_codes, train_y, codes, test_y, config.knn_k)
        summary[M.LOGREG] = M.logreg_accuracy(train_codes, train_y, codes, test_y, config.logreg_max_iter)
    else:
        by_digit = {}
    # Compression: the same decoder fed the code after a float16 or 8-bit round trip.
    half = in_batches(decode, M.float16_roundtrip(codes).to(codes.dtype)).view_as(test_x)
    summary[M.SQ_ERR_FP16] = float(M.sq_err_per_image(half.double(), test_x.double()).mean())
    quantizer = M.Int8Quantizer().fit(train_codes)
    dequant = quantizer.dequantize(quantizer.quantize(codes)).to(codes.dtype)
    int8 = in_batches(decode, dequant).view_as(test_x)
    summary[M.SQ_ERR_INT8] = float(M.sq_err_per_image(int8.double(), test_x.double()).mean())
    return summary, by_digit, sq
