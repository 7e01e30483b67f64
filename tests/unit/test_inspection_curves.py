"""The inspection curves: drawn from the accumulator's counts, their areas are the metrics reported."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aeflow.evaluation.pixel_metrics import ALL, PRO_FPR_LIMIT, PixelAccumulator
from aeflow.reporting.inspection_report import curve_figures
from aeflow.reporting.report import render_markdown

TYPES = ["good", "scratch", "dent"]
SIDE = 12


def _accumulated(seed: int = 0) -> PixelAccumulator:
    """Maps where defects are brighter than good pixels on average, overlapping (no perfect split),
    with some image scores tied."""
    generator = torch.Generator().manual_seed(seed)
    acc = PixelAccumulator(TYPES, n_bins=50)
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2, 0, 1])
    maps = 0.6 * torch.rand(len(labels), SIDE, SIDE, generator=generator)
    masks = torch.zeros(len(labels), SIDE, SIDE, dtype=torch.uint8)
    for i in torch.nonzero(labels).flatten():
        masks[i, 2:5, 2:6] = 1  # two regions per defect image
        masks[i, 8:11, 7:9] = 1
    maps = (maps + 0.35 * masks * torch.rand(maps.shape, generator=generator)).clamp(0, 1)
    scores = maps.flatten(1).amax(1)
    scores[[1, 5]] = scores[0].item()  # a tie between a good and a defect image
    for rows in (slice(0, 6), slice(6, None)):
        acc.add(maps[rows], masks[rows], labels[rows], scores[rows])
    return acc


def test_curves_run_from_corner_to_corner_rise_and_enclose_the_reported_areas():
    acc = _accumulated()
    curves, metrics = acc.curves(), acc.metrics()[ALL]
    for key in ("image_roc", "pixel_roc"):
        xs, ys = map(np.asarray, curves[key])
        assert (xs[0], ys[0]) == (0.0, 0.0) and (xs[-1], ys[-1]) == (1.0, 1.0), key
        assert (np.diff(xs) >= 0).all() and (np.diff(ys) >= 0).all(), key
    assert np.trapezoid(curves["image_roc"][1], curves["image_roc"][0]) == pytest.approx(
        metrics["image_auroc"], abs=1e-6
    )
    assert np.trapezoid(curves["pixel_roc"][1], curves["pixel_roc"][0]) == pytest.approx(
        metrics["pixel_auroc"], abs=1e-6
    )
    xs, ys = map(np.asarray, curves["pro"])
    assert (xs[0], ys[0]) == (0.0, 0.0) and xs[-1] == pytest.approx(PRO_FPR_LIMIT)
    assert (np.diff(xs) >= 0).all() and (np.diff(ys) >= 0).all()
    assert np.trapezoid(ys, xs) / PRO_FPR_LIMIT == pytest.approx(metrics["aupro"], abs=1e-6)


def test_the_image_roc_steps_diagonally_over_tied_scores():
    from aeflow.evaluation.pixel_metrics import image_roc

    fpr, tpr = image_roc(np.array([0.1, 0.5, 0.5]), np.array([0.5, 0.9]))
    np.testing.assert_allclose(fpr, [0, 0, 2 / 3, 1])
    np.testing.assert_allclose(tpr, [0, 0.5, 1, 1])


def test_the_report_draws_a_curve_figure_per_method_and_links_it(tmp_path):
    curves = {"ae_l2": _accumulated(0).curves(), "pca_l2": _accumulated(1).curves()}
    metrics = {"inspection": {m: {ALL: {"image_auroc": 0.9, "aupro": 0.5}} for m in curves}}
    figures = curve_figures(metrics, {"curves": curves}, tmp_path)
    assert [f.path.name for f in figures] == ["curves_ae_l2.png", "curves_pca_l2.png"]
    assert all(f.path.stat().st_size > 0 for f in figures)
    assert "autoencoder, L2 map: image ROC, pixel ROC and the PRO curve" in figures[0].caption
    markdown = render_markdown([], figures, tmp_path / "report.md")
    assert "curves_ae_l2.png" in markdown and "curves_pca_l2.png" in markdown
    # Details written before the evaluate stage kept curves: no curve figures, no error.
    assert curve_figures(metrics, {}, tmp_path) == []
