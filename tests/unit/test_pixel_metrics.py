"""Pixel metrics: AUPRO checked by hand and against an independent exact implementation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import precision_recall_curve, roc_auc_score

from aeflow.evaluation.pixel_metrics import ALL, PixelAccumulator, area_up_to


def _regions(mask: np.ndarray) -> list[list[tuple[int, int]]]:
    """4-connected regions of a boolean mask by flood fill (no scipy: independent of the code)."""
    seen, out = np.zeros_like(mask), []
    for start in zip(*np.nonzero(mask), strict=True):
        if seen[start]:
            continue
        stack, region = [start], []
        seen[start] = True
        while stack:
            y, x = stack.pop()
            region.append((y, x))
            for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
        out.append(region)
    return out


def exact_aupro(maps: np.ndarray, masks: np.ndarray, limit: float = 0.3) -> float:
    """The PRO curve at every distinct score (Bergmann et al.'s definition), integrated to `limit`."""
    regions = [[maps[i][tuple(np.array(r).T)] for r in _regions(masks[i])] for i in range(len(maps))]
    regions = [r for per_image in regions for r in per_image]
    negatives = maps[masks == 0]
    points = [(0.0, 0.0)]
    for th in sorted(set(maps.ravel().tolist()), reverse=True):
        fpr = float((negatives >= th).mean())
        pro = float(np.mean([(r >= th).mean() for r in regions]))
        points.append((fpr, pro))
    area, (x0, y0) = 0.0, points[0]
    for x1, y1 in points[1:]:
        if x0 >= limit:
            break
        if x1 > limit:  # interpolate the crossing point
            y1, x1 = y0 + (y1 - y0) * (limit - x0) / (x1 - x0), limit
        area += (x1 - x0) * (y0 + y1) / 2
        x0, y0 = x1, y1
    return area / limit


def _accumulate(maps, masks, labels, n_bins=10, types=("good", "dent")):
    acc = PixelAccumulator(types, n_bins)
    scores = torch.as_tensor(maps).flatten(1).amax(1)
    acc.add(torch.as_tensor(maps), torch.as_tensor(masks), torch.as_tensor(labels), scores)
    return acc.metrics()


def test_aupro_and_pixel_auroc_by_hand():
    # A defect image with two regions, A (top left, 2 pixels) and B (right, 1 pixel), and a good
    # image with three high-scoring pixels. Scores are bin centres (n_bins 10): binning loses nothing.
    defect = np.array([[0.95, 0.45, 0.05, 0.05], [0.05, 0.05, 0.05, 0.75]])
    mask = np.array([[1, 1, 0, 0], [0, 0, 0, 1]], np.uint8)
    good = np.array([[0.85, 0.55, 0.35, 0.05], [0.05, 0.05, 0.05, 0.05]])
    # 13 good pixels. Thresholds from the top, (FPR, PRO = mean of A's and B's overlap):
    #   0.95: (0, (1/2 + 0)/2 = 0.25)   0.85: (1/13, 0.25)   0.75: (1/13, (1/2 + 1)/2 = 0.75)
    #   0.55: (2/13, 0.75)   0.45: (2/13, 1)   0.35: (3/13, 1)   0.05: (1, 1)
    # Area up to FPR 0.3: 0.25 * 1/13 + 0.75 * 1/13 + 1 * (0.3 - 2/13) = 0.3 - 1/13;
    # normalised: (0.3 - 1/13) / 0.3 = 0.743590.
    by_hand = (0.3 - 1 / 13) / 0.3
    # Pixel AUROC: the share of (defect, good) pixel pairs ranked right: 0.95 beats 13, 0.75 beats 12
    # (not 0.85), 0.45 beats 11 (not 0.85 or 0.55): 36 / 39.
    maps, masks = np.stack([good, defect]), np.stack([np.zeros_like(mask), mask])
    metrics = _accumulate(maps, masks, [0, 1])
    assert exact_aupro(maps, masks) == pytest.approx(by_hand, abs=1e-12)
    assert metrics[ALL]["aupro"] == pytest.approx(by_hand, abs=1e-12)
    assert metrics["dent"]["aupro"] == pytest.approx(by_hand, abs=1e-12)
    assert metrics[ALL]["pixel_auroc"] == pytest.approx(36 / 39, abs=1e-12)
    # Image scores: the defect image's max 0.95 beats the good image's 0.85.
    assert metrics[ALL]["image_auroc"] == 1.0 and metrics[ALL]["image_f1_max"] == 1.0


def test_binned_metrics_match_exact_ones_within_their_bound():
    rng = np.random.default_rng(0)
    maps = rng.uniform(0, 0.6, (6, 16, 16))
    masks = np.zeros((6, 16, 16), np.uint8)
    for i, (y, x) in zip(range(1, 6), rng.integers(2, 10, (5, 2)), strict=False):
        masks[i, y : y + 4, x : x + 3] = 1
        masks[i, 13:15, 1:3] = 1  # a second region in each defect image
        maps[i][masks[i] == 1] += rng.uniform(0, 0.4, int(masks[i].sum()))
    labels = [0, 1, 2, 1, 2, 1]
    types = ("good", "dent", "scratch")
    for n_bins in (1000, 37):
        metrics = _accumulate(maps, masks, labels, n_bins, types)
        got = metrics[ALL]
        truth = masks.ravel().astype(bool)
        exact_auroc = roc_auc_score(truth, maps.ravel())
        precision, recall, _ = precision_recall_curve(truth, maps.ravel())
        exact_f1 = np.max(2 * precision * recall / np.maximum(precision + recall, 1e-12))
        bound = got["aupro_bin_error"] + 1e-12
        assert abs(got["aupro"] - exact_aupro(maps, masks)) <= bound
        assert abs(got["pixel_auroc"] - exact_auroc) <= got["pixel_auroc_bin_error"] + 1e-12
        assert got["pixel_f1_max"] <= exact_f1 + 1e-12
        if n_bins == 1000:  # fine bins: the bounds are small
            assert got["aupro_bin_error"] < 0.01 and got["pixel_auroc_bin_error"] < 0.002
            assert got["pixel_f1_max"] == pytest.approx(exact_f1, abs=0.01)
    # Per type: good images plus that type's images.
    dent = [0, 1, 3, 5]
    assert metrics["dent"]["aupro"] == pytest.approx(exact_aupro(maps[dent], masks[dent]), abs=0.05)
    assert set(metrics) == {ALL, "dent", "scratch"}


def test_image_metrics_are_exact():
    maps = np.zeros((5, 4, 4))
    for i, peak in enumerate([0.1, 0.3, 0.2, 0.5, 0.25]):
        maps[i, 0, 0] = peak
    metrics = _accumulate(maps, np.zeros((5, 4, 4), np.uint8), [0, 1, 0, 1, 1])
    # good peaks 0.1, 0.2; defect 0.3, 0.5, 0.25: every pair right except none -> AUROC 1.
    assert metrics[ALL]["image_auroc"] == 1.0
    maps[0, 0, 0] = 0.4  # a good image now beats 0.3 and 0.25: 4 of 6 pairs right
    metrics = _accumulate(maps, np.zeros((5, 4, 4), np.uint8), [0, 1, 0, 1, 1])
    assert metrics[ALL]["image_auroc"] == pytest.approx(4 / 6)
    # F1-max: at threshold 0.5, 1 TP, 0 FP, 2 FN -> 0.5; at 0.25: 3 TP, 1 FP -> 6/7.
    assert metrics[ALL]["image_f1_max"] == pytest.approx(6 / 7)


def test_area_up_to_cuts_at_the_limit():
    x, y = np.array([0.0, 0.2, 0.4, 1.0]), np.array([0.0, 1.0, 1.0, 1.0])
    assert area_up_to(x, y, 0.3) == pytest.approx(0.1 + 0.1)
    assert area_up_to(np.array([0.0, 0.1, 0.1, 0.3]), np.array([0.0, 0.0, 1.0, 1.0]), 0.3) == pytest.approx(
        0.2
    )
