"""What the evaluate and baselines stages share: the names of the metrics file's sections,
the config section as its dataclass, the probes' training subsample, and one encoder/decoder
pair scored on the test set (the autoencoder's, or PCA's at the same code size).

The test split stays uint8 and is scored batch by batch (aeflow.evaluation.streaming); the
probes' training subsample is the only float copy, at most `PROBE_BYTES`."""

from __future__ import annotations

from collections.abc import Callable

import torch
from omegaconf import DictConfig, OmegaConf

from aeflow.config.schema import EvaluateConfig
from aeflow.evaluation import metrics as M
from aeflow.evaluation import pca as P
from aeflow.evaluation import streaming
from aeflow.evaluation.pca import PCA

Fn = Callable[[torch.Tensor], torch.Tensor]

MODEL, PCA_KEY, PIXELS, COMPRESSION = "test", "pca", "pixels", "compression"
# float32 pixels of the probes' training subsample: MNIST's 10,000 images are 31 MB, 64x64 RGB
# images are capped at 2,730 and 256x256 RGB photos at 170, however large the split.
PROBE_BYTES = 128 * 2**20
NAMES = {MODEL: "autoencoder", PCA_KEY: "PCA", PIXELS: "raw pixels"}


def settings(cfg: DictConfig, name: str, schema: type):
    """The `name:` config section as its schema dataclass (defaults where the section is absent)."""
    section = cfg.get(name)
    return schema(**OmegaConf.to_container(section, resolve=True)) if section else schema()


def fit_pca(train_images: torch.Tensor, n_components: int) -> PCA:
    """PCA on the training split's uint8 images, pixels scaled to [0, 1]: exact where the split
    is small (MNIST), streamed otherwise (`pca.choose_method`)."""
    return P.fit_images(train_images, n_components)


def pca_components(latent_dim: int) -> int:
    """Components the baselines stage fits: the code size, and at least 2 for the 2-D maps that
    the visualize stage draws from the same fit."""
    return max(latent_dim, 2)


def probe_size(requested: int, pixels: int) -> int:
    """Probe training images for images of `pixels` values: `requested`, at most `PROBE_BYTES`
    of float32."""
    return max(1, min(requested, PROBE_BYTES // (4 * pixels)))


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
    """(probe subsample indices, train_x, train_y, test images, test_y): the probes' training
    subsample as float (n, C, H, W) in [0, 1] (`probe_size` images), the test images uint8 as stored."""
    size = probe_size(config.probe_train_size, streaming.pixels_of(train[0]))
    pick = probe_subset(len(train[1]), size, seed)
    return pick, streaming.take(train[0], pick), train[1][pick], test[0], test[1]


@torch.no_grad()
def score_codes(
    encode: Fn,
    decode: Fn,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_images: torch.Tensor,
    test_y: torch.Tensor,
    config: EvaluateConfig,
    labelled: bool = True,
):
    """Everything measured on one encoder/decoder pair; returns (summary, by_digit, sq_err per image).

    `test_images` are uint8 (a memory map is fine), read once batch by batch; only codes and
    per-image figures are kept. Without labels (`labelled` false) there are no probes and
    `by_digit` is empty."""
    train_codes = streaming.per_image(encode, train_x)
    quantizer = M.Int8Quantizer().fit(train_codes)
    codes, fp16, int8 = (streaming.Gather(len(test_images)) for _ in range(3))

    def reconstruct(x: torch.Tensor) -> torch.Tensor:
        # Compression: the same decoder fed the code after a float16 or 8-bit round trip.
        z = encode(x)
        codes.add(z)
        half = decode(M.float16_roundtrip(z).to(z.dtype)).reshape(x.shape)
        fp16.add(M.sq_err_per_image(half.double(), x.double()))
        dequant = quantizer.dequantize(quantizer.quantize(z)).to(z.dtype)
        int8.add(M.sq_err_per_image(decode(dequant).reshape(x.shape).double(), x.double()))
        return decode(z)

    summary, by_digit, sq = M.reconstruction_metrics_batched(reconstruct, test_images, test_y)
    codes = codes.result()
    if labelled:
        summary[M.KNN] = M.knn_accuracy(train_codes, train_y, codes, test_y, config.knn_k)
        summary[M.LOGREG] = M.logreg_accuracy(train_codes, train_y, codes, test_y, config.logreg_max_iter)
    else:
        by_digit = {}
    summary[M.SQ_ERR_FP16] = float(fp16.result().mean())
    summary[M.SQ_ERR_INT8] = float(int8.result().mean())
    return summary, by_digit, sq
