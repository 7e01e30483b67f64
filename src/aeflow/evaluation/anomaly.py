"""Anomaly scores per image, how well they separate normal from anomalous images, and the threshold.

Scores (higher = more anomalous), for images (N, 1, H, W) with pixels in [0, 1]:
- `sq_err`: sum over the pixels of the squared reconstruction error;
- `bce`: mean binary cross-entropy per pixel of the reconstruction, clamped into
  [`BCE_EPS`, 1 - `BCE_EPS`];
- `mahalanobis`: squared Mahalanobis distance of the code from the mean of the
  training codes, under their covariance shrunk towards a multiple of the identity
  (Ledoit-Wolf's intensity, at least `MIN_SHRINKAGE`);
- `pca`: PCA's squared reconstruction error with as many components as the code
  has units (the baseline, as for reconstruction).

Separation is measured with AUROC, AUPRC (anomalies are the positive class) and
the false-positive rate at 95% true-positive rate. The threshold is a quantile of
the validation images' scores, so about (1 - quantile) of normal images are flagged.
`DetectorState` holds everything a served model needs to score images, as JSON:
no pickle.

Results are nested as {protocol: {set: {score: {metric: value}}}} under `anomaly`
in metrics/evaluate.json; `dvc exp show` and MLflow show them flattened as
`anomaly.<protocol>.<set>.<score>.<metric>`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path

import torch

from aeflow.evaluation.metrics import bce_per_image, sq_err_per_image
from aeflow.evaluation.shrinkage import ledoit_wolf_shrinkage
from aeflow.evaluation.streaming import (
    Gather,
    as_float,  # noqa: F401 (one batch's conversion, for callers)
    float_batches,
    per_image,
    pixels_of,
    rows_per_batch,
)

Fn = Callable[[torch.Tensor], torch.Tensor]

SQ_ERR, BCE, MAHALANOBIS, PCA_SCORE = "sq_err", "bce", "mahalanobis", "pca"
MODEL_SCORES = (SQ_ERR, BCE, MAHALANOBIS)  # what the served model computes
SCORES = (*MODEL_SCORES, PCA_SCORE)
AUROC, AUPRC, FPR95, FLAGGED = "auroc", "auprc", "fpr95", "flagged"
# Protocols: shifted copies of the test images, other data sets, the classes left out of training.
SHIFT, OOD, OTHER_CLASSES = "shift", "ood", "other_classes"
ANOMALY = "anomaly"  # the section of metrics/evaluate.json and of the details file
# Keys of the `anomaly` section beside the protocols.
THRESHOLD, QUANTILE, FLAGGED_TEST = "threshold", "quantile", "flagged_test"
# Which images a set of scores belongs to: the normal test images, or '<protocol>/<set>'.
NORMAL = "test"

# The least shrinkage of the code covariance towards (trace / D) * identity. Its smallest
# eigenvalue is then at least MIN_SHRINKAGE * trace / D, so the precision's condition number is
# at most about 1 + D / MIN_SHRINKAGE however degenerate the codes (dead or collinear units):
# the float32 rounding of the codes (~1e-7 of their size) cannot be amplified without bound.
# On many codes Ledoit-Wolf's estimate is far below it (7.5e-4 for the tutorial model's 55k
# codes); on few codes (a small one-class set) it is above, and the data decide.
MIN_SHRINKAGE = 0.01
# Reconstructions are float32, whose values just below 1 are 2**-24 (6e-8) apart: log(1 - r) is
# resolved to about 6e-8 / (1 - r), so for a saturated pixel (1 - r ~ 1e-7) one rounding step of
# the sigmoid moves the BCE by ~0.5 and PyTorch and ONNX Runtime give BCE scores 5e-3 apart.
# Clamped at 1e-4 a pixel's rounding noise is at most 6e-4 of a nat (scores agree within 4e-6 on
# the MNIST test set), and the tutorial model's BCE AUROCs move by less than 1e-3.
BCE_EPS = 1e-4

SCORE_LABELS = {
    SQ_ERR: "squared error per image",
    BCE: "BCE per pixel",
    MAHALANOBIS: "Mahalanobis distance² of the code",
    PCA_SCORE: "PCA squared error per image",
}


# --- per-image scores ----------------------------------------------------------------------------


@dataclass
class CodeGaussian:
    """Mean and precision (inverse regularised covariance) of training codes (N, D), in float64.

    The covariance is shrunk towards (trace / D) * identity by `shrinkage`, so dead
    or collinear code units (common in autoencoders) still give a finite, well-conditioned
    distance (see `MIN_SHRINKAGE`).
    """

    mean: torch.Tensor  # (D,) float64
    precision: torch.Tensor  # (D, D) float64
    shrinkage: float = MIN_SHRINKAGE

    @classmethod
    def fit(cls, codes: torch.Tensor, shrinkage: float | None = None) -> CodeGaussian:
        """`shrinkage` in (0, 1]; None: Ledoit-Wolf's estimate, at least `MIN_SHRINKAGE`."""
        if shrinkage is not None and not 0 < shrinkage <= 1:
            raise ValueError(f"shrinkage={shrinkage}: must be in (0, 1], or None for Ledoit-Wolf's")
        z = codes.detach().flatten(1).double().cpu()  # (N, D)
        owned = z.data_ptr() != codes.data_ptr()  # z is a copy, which the fit may work in
        del codes  # the float32 codes are freed here when the caller holds no reference
        if len(z) < 2:
            raise ValueError(f"{len(z)} training codes: need at least 2 to fit a covariance")
        mean = z.mean(0)
        cov = torch.cov(z.T).reshape(z.shape[1], z.shape[1])
        if shrinkage is None:
            # Last: the estimate centres and squares the samples in place when z is a copy, so the
            # fit holds one float64 copy of the codes at a time, not three.
            shrinkage = max(MIN_SHRINKAGE, float(ledoit_wolf_shrinkage(z.numpy(), overwrite=owned)))
        scale = float(cov.diagonal().mean()) or 1.0  # all-constant codes: unit scale
        cov = (1 - shrinkage) * cov + shrinkage * scale * torch.eye(len(mean), dtype=cov.dtype)
        return cls(mean=mean, precision=torch.linalg.inv(cov), shrinkage=shrinkage)

    def distance(self, codes: torch.Tensor) -> torch.Tensor:
        """(N,) squared Mahalanobis distance of each code (N, D) from the mean."""
        d = codes.detach().flatten(1).double().cpu() - self.mean  # (N, D)
        return ((d @ self.precision) * d).sum(1)


@torch.no_grad()
def model_scores(
    encode: Fn, decode: Fn, gaussian: CodeGaussian, images, batch: int = 2048
) -> dict[str, torch.Tensor]:
    """{score: (N,) float64} of the autoencoder's scores (`MODEL_SCORES`) for images: float
    (N, C, H, W) in [0, 1], or an image source of uint8 images (aeflow.evaluation.streaming),
    made float one batch of at most `batch` images at a time."""
    parts = {name: Gather(len(images)) for name in MODEL_SCORES}
    for x in float_batches(images, rows_per_batch(pixels_of(images), batch)):
        codes = encode(x)  # (B, D)
        recon = decode(codes).reshape(x.shape).double().cpu()
        target = x.double().cpu()
        parts[SQ_ERR].add(sq_err_per_image(recon, target))
        parts[BCE].add(bce_per_image(recon.clamp(BCE_EPS, 1 - BCE_EPS), target))
        parts[MAHALANOBIS].add(gaussian.distance(codes))
    return {name: p.result(torch.zeros(0, dtype=torch.float64)) for name, p in parts.items()}


def pca_scores(pca, images, batch: int | None = None) -> torch.Tensor:
    """(N,) PCA's squared reconstruction error per image; `pca` is an `aeflow.evaluation.pca.PCA`;
    `images` as for `model_scores`."""

    def scores(x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1).double()
        return sq_err_per_image(pca.decode(pca.encode(flat)), flat)

    return per_image(scores, images, batch).double()


# --- separation metrics and the threshold ----------------------------------------------------------


def _curves(normal: torch.Tensor, anomalous: torch.Tensor):
    """(false positives, true positives) at each distinct score, highest score first: the counts
    scikit-learn's ranking metrics start from, computed as it does (stable descending sort,
    cumulative sums), so the metrics below equal `roc_auc_score`, `average_precision_score` and
    `roc_curve` to the last bit without their input validation on every call."""
    import numpy as np

    s = torch.cat([normal, anomalous]).double().numpy()
    y = np.concatenate([np.zeros(len(normal)), np.ones(len(anomalous))])
    order = np.argsort(s, kind="stable")[::-1]
    s, y = s[order], y[order]
    ends = np.concatenate([np.flatnonzero(np.diff(s)), [len(s) - 1]])  # last of each distinct score
    tps = np.cumsum(y)[ends]
    return 1 + ends - tps, tps


def _roc(fps, tps):
    """(FPR, TPR) as `sklearn.metrics.roc_curve` returns them (collinear points dropped, (0, 0) first)."""
    import numpy as np

    if len(fps) > 2:
        keep = np.concatenate([[True], np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), [True]])
        fps, tps = fps[keep], tps[keep]
    fps, tps = np.concatenate([[0.0], fps]), np.concatenate([[0.0], tps])
    return fps / fps[-1], tps / tps[-1]


def separation(normal: torch.Tensor, anomalous: torch.Tensor) -> dict[str, float]:
    """AUROC, AUPRC and FPR at 95% TPR of a score that should be higher on `anomalous` images."""
    import numpy as np

    if len(normal) == 0 or len(anomalous) == 0:
        raise ValueError(f"need normal and anomalous scores, got {len(normal)} and {len(anomalous)}")
    fps, tps = _curves(normal, anomalous)
    fpr, tpr = _roc(fps, tps)
    # Average precision: the step integral of precision over recall, highest threshold last.
    precision = np.concatenate([(tps / (tps + fps))[::-1], [1.0]])
    recall = np.concatenate([(tps / tps[-1])[::-1], [0.0]])
    return {
        AUROC: float(np.trapezoid(tpr, fpr)),
        AUPRC: float(max(0.0, -np.sum(np.diff(recall) * precision[:-1]))),
        FPR95: float(fpr[(tpr >= 0.95).argmax()]),
    }


def roc_points(normal: torch.Tensor, anomalous: torch.Tensor, n: int = 101) -> dict[str, list[float]]:
    """The ROC curve at `n` false-positive rates from 0 to 1 (interpolated): what the report draws."""
    import numpy as np

    fpr, tpr = _roc(*_curves(normal, anomalous))
    grid = np.linspace(0, 1, n)
    return {
        "fpr": [round(float(v), 4) for v in grid],
        "tpr": [round(float(v), 4) for v in np.interp(grid, fpr, tpr)],
    }


def histogram(normal: torch.Tensor, anomalous: torch.Tensor, bins: int = 40) -> dict[str, list[float]]:
    """Counts of both score sets over shared bins between their 0.5th and 99.5th percentiles
    (so a few extreme scores do not flatten the picture); values outside go to the end bins."""
    both = torch.cat([normal, anomalous]).double()
    lo, hi = (float(v) for v in torch.quantile(both, torch.tensor([0.005, 0.995], dtype=both.dtype)))
    hi = hi if hi > lo else lo + 1.0
    edges = torch.linspace(lo, hi, bins + 1, dtype=torch.float64)

    def counts(s: torch.Tensor) -> list[int]:
        return torch.histc(s.double().clamp(lo, hi), bins=bins, min=lo, max=hi).long().tolist()

    return {"edges": [float(e) for e in edges], "normal": counts(normal), "anomalous": counts(anomalous)}


def threshold(validation_scores: torch.Tensor, quantile: float) -> float:
    """The `quantile` of the validation images' scores: images scoring above it are flagged."""
    if not 0 < quantile < 1:
        raise ValueError(f"quantile={quantile}: must be in (0, 1), e.g. 0.99")
    if len(validation_scores) == 0:
        raise ValueError("no validation scores to choose a threshold from")
    return float(torch.quantile(validation_scores.double(), quantile))


def flagged_share(scores: torch.Tensor, limit: float) -> float:
    """Share of images whose score is above `limit`."""
    return float((scores > limit).double().mean()) if len(scores) else 0.0


# --- what a served model needs --------------------------------------------------------------------


@dataclass
class DetectorState:
    """The code Gaussian and the per-score thresholds, saved as JSON beside the weights."""

    mean: list[float]
    precision: list[list[float]]
    thresholds: dict[str, float]
    quantile: float
    score: str = SQ_ERR  # what `output=score` and `output=is_anomaly` use unless asked otherwise
    validation_images: int = 0
    training_images: int = 0
    shrinkage: float = MIN_SHRINKAGE  # what the covariance was shrunk by (`CodeGaussian`)
    description: dict[str, str] = field(default_factory=lambda: dict(SCORE_LABELS))

    @cached_property
    def gaussian(self) -> CodeGaussian:
        return CodeGaussian(
            mean=torch.tensor(self.mean, dtype=torch.float64),
            precision=torch.tensor(self.precision, dtype=torch.float64),
            shrinkage=self.shrinkage,
        )

    def write(self, path: str | Path) -> None:
        """The detector as JSON, written atomically (aeflow.io)."""
        from aeflow.io import write_text

        write_text(path, json.dumps(asdict(self)))

    @classmethod
    def load(cls, path: str | Path) -> DetectorState:
        return cls(**json.loads(Path(path).read_text()))

    def scores(self, encode: Fn, decode: Fn, images: torch.Tensor, score: str | None = None) -> torch.Tensor:
        """(N,) `score` (default: `self.score`) of float images (N, 1, H, W) in [0, 1]."""
        score = score or self.score
        if score not in MODEL_SCORES:
            raise ValueError(f"score={score!r}: allowed: {', '.join(MODEL_SCORES)}")
        return model_scores(encode, decode, self.gaussian, images)[score]

    def is_anomaly(
        self, encode: Fn, decode: Fn, images: torch.Tensor, score: str | None = None
    ) -> torch.Tensor:
        """(N,) bool: whether each image's `score` is above its validation threshold."""
        return self.scores(encode, decode, images, score) > self.thresholds[score or self.score]


def fit_detector(
    encode: Fn,
    decode: Fn,
    train_images: torch.Tensor,
    val_images: torch.Tensor,
    quantile: float,
    score: str = SQ_ERR,
    shrinkage: float | None = None,
) -> DetectorState:
    """Fit the code Gaussian on `train_images` and each model score's threshold on `val_images`
    (float (N, C, H, W) in [0, 1], or uint8 splits, memory-mapped or not, made float one batch
    at a time); `shrinkage` as in `CodeGaussian.fit`.

    The training codes (N x latent_dim, float32) are kept for the Gaussian: a few bytes per
    image (128 floats for the default model against 784 pixels), as the per-image scores are."""
    if score not in MODEL_SCORES:
        raise ValueError(f"score={score!r}: allowed: {', '.join(MODEL_SCORES)}")
    # No reference kept here: the fit frees the float32 codes once it holds them as float64.
    gaussian = CodeGaussian.fit(
        per_image(encode, train_images, rows_per_batch(pixels_of(train_images))), shrinkage
    )
    val = model_scores(encode, decode, gaussian, val_images)
    return DetectorState(
        mean=gaussian.mean.tolist(),
        precision=gaussian.precision.tolist(),
        thresholds={name: threshold(s, quantile) for name, s in val.items()},
        quantile=quantile,
        score=score,
        validation_images=len(val_images),
        training_images=len(train_images),
        shrinkage=gaussian.shrinkage,
    )


# --- the evaluation over all protocols --------------------------------------------------------------


@dataclass
class AnomalyResult:
    metrics: dict  # the `anomaly` section of metrics/evaluate.json
    details: dict  # histograms, ROC curves, most/least anomalous test images (evaluate_details.json)


def evaluate_anomaly(
    scores_of: Callable[..., dict[str, torch.Tensor]],
    normal,
    outsides: Mapping[str, Mapping],
    thresholds: Mapping[str, float],
    quantile: float,
    extreme_n: int = 16,
    index: torch.Tensor | None = None,
    known: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
) -> AnomalyResult:
    """Separation of `normal` test images from each set in `outsides` ({protocol: {set name:
    images}}), for every score `scores_of(images)` returns; images are whatever `scores_of`
    takes (float tensors, or uint8 image sources scored batch by batch).

    `thresholds` ({score: value}) come from validation images; the metrics give the share of
    each set flagged above them. The details keep, per set, the histograms and ROC curves
    the report draws, and the indices of the most and least anomalous normal images
    (`index[i]` for the i-th normal image: its place in the whole test set; default i).
    `known`: scores computed before, {`NORMAL` or '<protocol>/<set>': {score: (N,)}}, added
    after those of `scores_of` (e.g. PCA's, which depend on the data alone).
    """
    known = known or {}

    def scored(where: str, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return {**scores_of(images), **known.get(where, {})}

    base = scored(NORMAL, normal)
    metrics: dict = {
        QUANTILE: quantile,
        THRESHOLD: {k: thresholds[k] for k in base},
        FLAGGED_TEST: {k: flagged_share(s, thresholds[k]) for k, s in base.items()},
    }
    details: dict = {"histograms": {}, "roc": {}, "extremes": {}}
    for protocol, sets in outsides.items():
        for name, images in sets.items():
            where = f"{protocol}/{name}"
            out = scored(where, images)
            metrics.setdefault(protocol, {})[name] = {
                k: {**separation(base[k], out[k]), FLAGGED: flagged_share(out[k], thresholds[k])}
                for k in base
            }
            details["histograms"][where] = {k: histogram(base[k], out[k]) for k in base}
            details["roc"][where] = {k: roc_points(base[k], out[k]) for k in base}
    index = torch.arange(len(normal)) if index is None else index
    for k, s in base.items():
        order = s.argsort(descending=True)
        details["extremes"][k] = {
            "most": [int(index[i]) for i in order[:extreme_n]],
            "least": [int(index[i]) for i in order.flip(0)[:extreme_n]],
        }
    return AnomalyResult(metrics=metrics, details=details)


def best_score(metrics: Mapping, protocol: str, name: str, metric: str = AUROC) -> tuple[str, float]:
    """(score, value): the autoencoder's score (PCA's is the baseline, not a candidate) with the
    highest `metric` for one set of the `anomaly` metrics."""
    scored = metrics[protocol][name]
    best = max((k for k in scored if k != PCA_SCORE), key=lambda k: scored[k][metric])
    return best, scored[best][metric]
