"""What the codes are worth: the test set scored for reconstruction, feature quality and
compression, always beside PCA with the same code size (and raw pixels for the probes).

`evaluate` returns three things the evaluate stage writes:
- `metrics`: the compact DVC metrics file (what `dvc exp show` and MLflow show);
- `details`: per-digit tables for every metric, the worst-reconstructed test
  images, and the probe settings (a plain JSON, not a DVC metric);
- `per_digit_rows`: the per-digit squared error as DVC plot rows (bar chart).
Both `metrics` and `details` carry an `anomaly` section: how well anomaly scores tell the
test images from shifted copies and other data (aeflow.evaluation.protocols).
PCA's and the raw pixels' numbers come from the baselines stage (aeflow.evaluation.baselines),
which computes them once per data and config.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import torch
from omegaconf import DictConfig

from aeflow.config.schema import EvaluateConfig
from aeflow.data.folder import has_labels
from aeflow.data.splits import splits_from_config
from aeflow.evaluation import anomaly, protocols
from aeflow.evaluation import baselines as B
from aeflow.evaluation import metrics as M
from aeflow.evaluation.scoring import (
    COMPRESSION,
    MODEL,
    NAMES,
    PCA_KEY,
    PIXELS,
    probe_data,
    score_codes,
    settings,
)
from aeflow.evaluation.streaming import pixels_of

log = logging.getLogger(__name__)


@dataclass
class EvaluationResult:
    metrics: dict
    details: dict
    per_digit_rows: list[dict]


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
    baselines: B.Baselines,
    latent_dim: int,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    config: EvaluateConfig,
    seed: int = 0,
    labelled: bool = True,
) -> EvaluationResult:
    """Score `model` on uint8 splits (images (N, H, W) or (N, C, H, W), labels (N,)), beside the
    `baselines` of the same splits.

    Unlabelled images (`labelled` false) get the reconstruction and compression metrics only,
    and `M.SKIPPED` names what was left out."""
    pick, train_x, train_y, test_images, test_y = probe_data(train, test, config, seed)
    model.eval()
    test_m, digits_m, sq_m = score_codes(
        model.encode, model.decode, train_x, train_y, test_images, test_y, config, labelled
    )
    test_p, digits_p = baselines.metrics[PCA_KEY], baselines.by_digit
    pixels = {PIXELS: baselines.metrics[PIXELS]} if labelled else {}
    if labelled:
        test_m[M.BY_DIGIT] = {d: v[M.SQ_ERR] for d, v in digits_m.items()}
    metrics = {
        "latent_dim": latent_dim,
        MODEL: test_m,
        PCA_KEY: test_p,
        **pixels,
        COMPRESSION: M.code_bytes(latent_dim, pixels_of(test_images)),
        **({} if labelled else {M.SKIPPED: M.UNLABELLED_NOTE}),
    }
    details = {
        "by_digit": {MODEL: digits_m, PCA_KEY: digits_p},
        "worst": worst_images(sq_m, test_y, config.worst_n, labelled),
        "probes": {
            **{k: v for k, v in asdict(config).items() if k != "inspection"},  # data=mvtec only
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
    return EvaluationResult(metrics=metrics, details=details, per_digit_rows=rows)


def evaluate(
    cfg: DictConfig, model: torch.nn.Module, datamodule=None, baselines: B.Baselines | None = None
) -> EvaluationResult:
    """Test-set metrics of `model` beside PCA at the same code size and the raw pixels (see the
    module docstring).

    The splits come from `datamodule` when given (one already set up is reused), else they
    are read from `cfg.paths.data` as the DataModule would split them. `baselines`: the
    baselines stage's output for this data and config; None: computed here.
    """
    if datamodule is not None:
        datamodule.setup("test")
        splits = datamodule.splits
    else:
        splits = splits_from_config(cfg)
    splits = protocols.cpu(splits)
    if baselines is None:
        baselines = B.from_config(cfg, splits)
    train, test = splits["train"], splits["test"]
    config = settings(cfg, "evaluate", EvaluateConfig)
    latent_dim = int(cfg.model.latent_dim)
    labelled = has_labels(test[1])
    result = evaluate_splits(model, baselines, latent_dim, train, test, config, int(cfg.seed), labelled)
    found = protocols.from_config(cfg, model, splits, None, config, pca_scores=baselines.anomaly_scores)
    result.metrics[anomaly.ANOMALY], result.details[anomaly.ANOMALY] = found.metrics, found.details
    return result
