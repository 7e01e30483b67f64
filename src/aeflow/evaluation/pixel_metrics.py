"""Inspection metrics from anomaly maps, accumulated batch by batch in bounded memory.

Image level (exact, from one score per image): AUROC and F1-max.
Pixel level (from histograms): AUROC, F1-max, and AUPRO, the area under the
per-region overlap (PRO) curve up to a false-positive rate of 0.3, divided by 0.3
(Bergmann et al., IJCV 2021): at each threshold, the mean over every connected
defect region of the share of its pixels at or above the threshold, against the
share of good pixels at or above it.

Each metric is given for all test images and for each defect type, where a type's
metrics use the good test images and the images of that type.

Bounded memory: maps lie in [0, 1] (aeflow.evaluation.anomaly_maps) and are
counted into `n_bins` equal bins; the thresholds are the bin edges. The curves are
then exact at every edge, and only their course between two neighbouring edges is
unknown: there the exact curve stays inside the box spanned by the two points. So
the exact AUROC (or normalised AUPRO) differs from the binned one by at most the
sum of those boxes' areas, sum(dFPR * dTPR) (or sum(dFPR * dPRO) / 0.3), which
`*_bin_error` reports with each value. Pixel F1-max is the best over the edges, a
lower bound of the exact one. Memory: 2 counts per type and bin, and per type one
PRO sum per edge; the image scores (one float per image).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy import ndimage

from aeflow.evaluation.anomaly import AUROC, separation

PRO_FPR_LIMIT = 0.3
ALL = "all"  # the metrics' key for every test image together
GOOD_LABEL = 0  # test label of good images (aeflow.data.mvtec)


class PixelAccumulator:
    """Counts of map values per image type, for pixel and image metrics (see the module docstring).

    `types[i]` names test label i; label 0 is good.
    """

    def __init__(self, types: Sequence[str], n_bins: int = 1000) -> None:
        if n_bins < 2:
            raise ValueError(f"n_bins={n_bins}: at least 2")
        self.types, self.n_bins = list(types), n_bins
        count = len(self.types)
        self.negatives = np.zeros((count, n_bins), np.int64)  # good pixels per type and bin
        self.positives = np.zeros((count, n_bins), np.int64)  # defect pixels per type and bin
        self.pro_sums = np.zeros((count, n_bins + 1))  # sum over regions of their overlap at each edge
        self.regions = np.zeros(count, np.int64)
        self.scores: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []

    def add(
        self, maps: torch.Tensor, masks: torch.Tensor, labels: torch.Tensor, scores: torch.Tensor
    ) -> None:
        """One batch: maps (B, H, W) in [0, 1], masks (B, H, W) in {0, 1}, labels (B,), scores (B,)."""
        bins = (maps.double().numpy() * self.n_bins).astype(np.int64).clip(0, self.n_bins - 1)
        defect = masks.numpy().astype(bool)
        labels_np = labels.numpy()
        for label in np.unique(labels_np):
            rows = labels_np == label
            b, d = bins[rows], defect[rows]
            self.negatives[label] += np.bincount(b[~d], minlength=self.n_bins)
            self.positives[label] += np.bincount(b[d], minlength=self.n_bins)
            for image_bins, mask in zip(b, d, strict=True):
                if mask.any():
                    self._add_regions(label, image_bins, mask)
        self.scores.append(scores.double().numpy())
        self.labels.append(labels_np)

    def _add_regions(self, label: int, bins: np.ndarray, mask: np.ndarray) -> None:
        regions, count = ndimage.label(mask)  # 4-connected components, 1..count
        per_region = np.bincount(
            (regions[mask] - 1) * self.n_bins + bins[mask], minlength=count * self.n_bins
        ).reshape(count, self.n_bins)
        at_or_above = _at_or_above(per_region)  # (count, n_bins + 1)
        self.pro_sums[label] += (at_or_above / at_or_above[:, :1]).sum(0)
        self.regions[label] += count

    def metrics(self) -> dict[str, dict[str, float]]:
        """{'all' or defect type: {metric: value}} (see the module docstring)."""
        scores, labels = np.concatenate(self.scores), np.concatenate(self.labels)
        groups = {ALL: [i for i in range(len(self.types)) if i != GOOD_LABEL]}
        groups |= {self.types[i]: [i] for i in range(len(self.types)) if i != GOOD_LABEL}
        out = {}
        for name, defects in groups.items():
            if not any((labels == d).any() for d in defects):
                continue
            negatives, positives, pro, normal, anomalous = self._pooled(defects, scores, labels)
            out[name] = {
                **image_metrics(normal, anomalous),
                **pixel_metrics(negatives, positives),
                **aupro(negatives, pro),
            }
        return out

    def curves(self) -> dict[str, list[list[float]]]:
        """The curves behind the metrics of all test images, each as [xs, ys] (xs rising):
        `image_roc` and `pixel_roc` (FPR, TPR) from (0, 0) to (1, 1), and `pro` (FPR, mean region
        overlap) up to FPR 0.3. Their areas are the image AUROC, pixel AUROC and 0.3 * AUPRO."""
        negatives, positives, pro, normal, anomalous = self._pooled(
            [i for i in range(len(self.types)) if i != GOOD_LABEL],
            np.concatenate(self.scores),
            np.concatenate(self.labels),
        )
        return {
            "image_roc": _points(*image_roc(normal, anomalous)),
            "pixel_roc": _points(_rates(negatives), _rates(positives)),
            "pro": _points(*up_to(_rates(negatives), pro[::-1], PRO_FPR_LIMIT)),
        }

    def _pooled(self, defects: list[int], scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, ...]:
        """(negatives, positives, mean region overlap per edge, normal scores, anomalous scores) of
        the good images and those of the `defects` labels; `scores`, `labels`: every image's,
        concatenated once by the caller."""
        rows = [GOOD_LABEL, *defects]
        pro = self.pro_sums[defects].sum(0) / max(1, self.regions[defects].sum())
        return (
            self.negatives[rows].sum(0),
            self.positives[rows].sum(0),
            pro,
            scores[labels == GOOD_LABEL],
            scores[np.isin(labels, defects)],
        )


def _points(x: np.ndarray, y: np.ndarray) -> list[list[float]]:
    """[xs, ys] without repeats of the previous point (empty bins): the same curve, fewer numbers."""
    keep = np.r_[True, (np.diff(x) != 0) | (np.diff(y) != 0)]
    return [x[keep].tolist(), y[keep].tolist()]


def _at_or_above(hist: np.ndarray) -> np.ndarray:
    """(..., n_bins + 1): the count at or above each edge j (bins j..), 0 above the last edge."""
    tail = np.cumsum(hist[..., ::-1], axis=-1)[..., ::-1]
    return np.concatenate([tail, np.zeros((*hist.shape[:-1], 1), hist.dtype)], axis=-1)


def _rates(hist: np.ndarray) -> np.ndarray:
    """The share of a histogram's pixels at or above each edge, lowest threshold last (rates rising)."""
    counts = _at_or_above(hist)[::-1].astype(np.float64)
    return counts / max(1.0, counts[-1])


def _ranked(normal: np.ndarray, anomalous: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(true, false positives) flagged at each distinct score taken as the threshold, highest first."""
    scores = np.concatenate([normal, anomalous])
    truth = np.concatenate([np.zeros(len(normal)), np.ones(len(anomalous))])
    order = np.argsort(-scores, kind="stable")
    ends = np.r_[np.flatnonzero(np.diff(scores[order])), len(scores) - 1]  # last of each distinct score
    tp = np.cumsum(truth[order])[ends]
    return tp, ends + 1 - tp


def image_metrics(normal: np.ndarray, anomalous: np.ndarray) -> dict[str, float]:
    """Exact image AUROC and F1-max of per-image scores (higher: more anomalous)."""
    if len(normal) == 0 or len(anomalous) == 0:
        return {}
    tp, fp = _ranked(normal, anomalous)
    f1 = 2 * tp / (2 * tp + fp + (len(anomalous) - tp))
    auroc = separation(torch.from_numpy(normal), torch.from_numpy(anomalous))[AUROC]
    return {"image_auroc": auroc, "image_f1_max": float(f1.max())}


def image_roc(normal: np.ndarray, anomalous: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The exact image ROC: (FPR, TPR) at each distinct score, from (0, 0) to (1, 1); tied scores
    make one diagonal step, so its trapezoidal area is the image AUROC."""
    tp, fp = _ranked(normal, anomalous)
    return np.r_[0.0, fp / max(1, len(normal))], np.r_[0.0, tp / max(1, len(anomalous))]


def pixel_metrics(negatives: np.ndarray, positives: np.ndarray) -> dict[str, float]:
    """Pixel AUROC (with its binning error bound) and F1-max from counts per bin."""
    fpr, tpr = _rates(negatives), _rates(positives)
    tp = _at_or_above(positives).astype(np.float64)
    fp = _at_or_above(negatives).astype(np.float64)
    f1 = 2 * tp / np.maximum(1.0, tp + fp + positives.sum())
    return {
        "pixel_auroc": float(np.trapezoid(tpr, fpr)),
        "pixel_auroc_bin_error": float(np.sum(np.diff(fpr) * np.diff(tpr))),
        "pixel_f1_max": float(f1.max()),
    }


def aupro(negatives: np.ndarray, pro: np.ndarray, limit: float = PRO_FPR_LIMIT) -> dict[str, float]:
    """Normalised area under the PRO curve up to FPR `limit`, with its binning error bound.

    negatives: good-pixel counts per bin; pro: the mean region overlap at each edge (n_bins + 1).
    """
    fpr, overlap = _rates(negatives), pro[::-1]
    return {
        "aupro": area_up_to(fpr, overlap, limit) / limit,
        "aupro_bin_error": float(np.sum(np.diff(fpr) * np.diff(overlap) * (fpr[1:] <= limit))) / limit,
    }


def area_up_to(x: np.ndarray, y: np.ndarray, limit: float) -> float:
    """Trapezoidal area under y(x) for x in [0, limit]; x rising (ties allowed), y linear in between."""
    return float(np.trapezoid(*up_to(x, y, limit)[::-1]))


def up_to(x: np.ndarray, y: np.ndarray, limit: float) -> tuple[np.ndarray, np.ndarray]:
    """The points (x, y) with x <= limit, x rising, ending at `limit` on the segment that crosses it."""
    inside = int(np.searchsorted(x, limit, side="right"))  # points with x <= limit
    xs, ys = x[:inside], y[:inside]
    if inside < len(x) and xs[-1] < limit:  # cut the segment that crosses the limit
        x0, x1, y0, y1 = x[inside - 1], x[inside], y[inside - 1], y[inside]
        xs, ys = np.r_[xs, limit], np.r_[ys, y0 + (y1 - y0) * (limit - x0) / (x1 - x0)]
    return xs, ys


def flatten(metrics: dict[str, dict[str, float]], prefix: str) -> dict[str, float]:
    """{'<prefix>/<type>/<metric>': value}: the flat names metrics files and MLflow take."""
    return {
        f"{prefix}/{kind}/{name}": value for kind, values in metrics.items() for name, value in values.items()
    }
