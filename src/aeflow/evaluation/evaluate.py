"""What the codes are worth: the test set scored for reconstruction, feature quality and
compression, always beside PCA with the same code size (and raw pixels for the probes).

`evaluate` returns three things the evaluate stage writes:
- `metrics`: the compact DVC metrics file (what `dvc exp show` and MLflow show);
- `details`: per-digit tables for every metric, the worst-reconstructed test
  images, and the probe settings (a plain JSON, not a DVC metric);
- `per_digit_rows`: the per-digit squared error as DVC plot rows (bar chart).
Both `metrics` and `details` carry an `anomaly` section: how well anomaly scores tell the
test images from shifted copies and other data (aeflow.evaluation.protocols).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from omegaconf import DictConfig, OmegaConf

from aeflow.config.schema import EvaluateConfig
from aeflow.data.folder import has_labels
from aeflow.data.splits import load_splits
from aeflow.evaluation import anomaly, protocols
from aeflow.evaluation import metrics as M
from aeflow.evaluation.pca import PCA

log = logging.getLogger(__name__)

Fn = Callable[[torch.Tensor], torch.Tensor]

MODEL, PCA_KEY, PIXELS, COMPRESSION = "test", "pca", "pixels", "compression"
NAMES = {MODEL: "autoencoder", PCA_KEY: "PCA", PIXELS: "raw pixels"}


def settings(cfg: DictConfig, name: str, schema: type):
    """The `name:` config section as its schema dataclass (defaults where the section is absent)."""
    section = cfg.get(name)
    return schema(**OmegaConf.to_container(section, resolve=True)) if section else schema()


@dataclass
class EvaluationResult:
    metrics: dict
    details: dict
    per_digit_rows: list[dict]
    pca: PCA  # fitted on the training split, `pca_components(latent_dim)` components


def fit_pca(train_images: torch.Tensor, n_components: int) -> PCA:
    """PCA on the training split's images (uint8 (N, H, W)), pixels scaled to [0, 1]."""
    return PCA(n_components).fit(train_images.double() / 255.0)


def pca_components(latent_dim: int) -> int:
    """Components the evaluate stage fits: the code size, and at least 2 for the 2-D maps that
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


def worst_images(sq: torch.Tensor, labels: torch.Tensor, n: int, labelled: bool = True) -> list[dict]:
    """The `n` test images with the highest squared error: index, digit (if `labelled`), error
    (highest first)."""
    top = sq.topk(min(n, len(sq)))
    return [
        {"index": int(i), **({"digit": int(labels[i])} if labelled else {}), M.SQ_ERR: round(float(e), 4)}
        for e, i in zip(top.values, top.indices)
    ]


def evaluate_splits(
    model: torch.nn.Module,
    pca: PCA,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    config: EvaluateConfig,
    seed: int = 0,
    labelled: bool = True,
) -> EvaluationResult:
    """Score `model` and `pca` on uint8 splits (images (N, H, W) or (N, C, H, W), labels (N,)).

    Unlabelled images (`labelled` false) get the reconstruction and compression metrics only,
    and `M.SKIPPED` names what was left out."""
    pick = probe_subset(len(train[1]), config.probe_train_size, seed)
    train_x, train_y = to_float(train[0][pick]), train[1][pick]
    test_x, test_y = to_float(test[0]), test[1]
    model.eval()

    def pca_encode(x: torch.Tensor) -> torch.Tensor:
        return pca.encode(x).float()

    def pca_decode(z: torch.Tensor) -> torch.Tensor:
        return pca.decode(z).float()

    args = (train_x, train_y, test_x, test_y, config, labelled)
    test_m, digits_m, sq_m = score_codes(model.encode, model.decode, *args)
    test_p, digits_p, _ = score_codes(pca_encode, pca_decode, *args)
    pixels = {}
    if labelled:
        pixels[PIXELS] = {
            M.KNN: M.knn_accuracy(train_x, train_y, test_x, test_y, config.knn_k),
            M.LOGREG: M.logreg_accuracy(train_x, train_y, test_x, test_y, config.logreg_max_iter),
        }
        test_m[M.BY_DIGIT] = {d: v[M.SQ_ERR] for d, v in digits_m.items()}
    code_size = pca.k
    metrics = {
        "latent_dim": code_size,
        MODEL: test_m,
        PCA_KEY: test_p,
        **pixels,
        COMPRESSION: M.code_bytes(code_size, test_x[0].numel()),
        **({} if labelled else {M.SKIPPED: M.UNLABELLED_NOTE}),
    }
    details = {
        "by_digit": {MODEL: digits_m, PCA_KEY: digits_p},
        "worst": worst_images(sq_m, test_y, config.worst_n, labelled),
        "probes": {
            **asdict(config),
            "probe_train_images": len(pick),
            "test_images": len(test_y),
            "knn": "Euclidean k nearest neighbours, majority vote",
            "logreg": "multinomial logistic regression on standardised features, L-BFGS, L2 1e-4",
            "int8": "per-dimension affine 8-bit, range fitted on the probe training codes",
        },
    }
    rows = [
        {
            "digit": d,
            "model": NAMES[key],
            "label": f"{d} {NAMES[key]}",
            M.SQ_ERR: round(v[M.SQ_ERR], 4),
            M.SSIM: round(v[M.SSIM], 4),
        }
        for d in digits_m
        for key, v in ((MODEL, digits_m[d]), (PCA_KEY, digits_p[d]))
    ]
    log.info("test squared error per image: model %.3f, PCA %.3f", test_m[M.SQ_ERR], test_p[M.SQ_ERR])
    if labelled:
        log.info(
            "k-NN accuracy: model %.4f, PCA %.4f, pixels %.4f",
            test_m[M.KNN],
            test_p[M.KNN],
            metrics[PIXELS][M.KNN],
        )
    else:
        log.info("label-based metrics skipped: %s", M.UNLABELLED_NOTE)
    return EvaluationResult(metrics=metrics, details=details, per_digit_rows=rows, pca=pca)


def evaluate(cfg: DictConfig, model: torch.nn.Module, datamodule=None) -> EvaluationResult:
    """Test-set metrics of `model` and of PCA at the same code size (see the module docstring).

    The splits come from `datamodule` when given (one already set up is reused), else they
    are read from `cfg.paths.data` as the DataModule would split them.
    """
    if datamodule is not None:
        datamodule.setup("test")
        splits = datamodule.splits
    else:
        data = cfg.data
        splits = load_splits(
            cfg.paths.data,
            data.files,
            int(data.val_size),
            int(data.split_seed),
            str(data.get("name", "")),
            data.get("classes"),
        )
    train, test = (tuple(t.cpu() for t in splits[name]) for name in ("train", "test"))
    latent_dim = int(cfg.model.latent_dim)
    pca = fit_pca(train[0], pca_components(latent_dim))
    config = settings(cfg, "evaluate", EvaluateConfig)
    labelled = has_labels(test[1])
    result = evaluate_splits(model, pca.first(latent_dim), train, test, config, int(cfg.seed), labelled)
    result.pca = pca
    found = protocols.from_config(cfg, model, splits, pca.first(latent_dim), config)
    result.metrics[anomaly.ANOMALY], result.details[anomaly.ANOMALY] = found.metrics, found.details
    return result
