"""The report's anomaly part: the AUROC table marks the best autoencoder score; the figures are drawn."""

import torch

from aeflow.evaluation import anomaly as A
from aeflow.reporting.anomaly_figures import EXTREMES, HISTOGRAMS, ROC, draw, section


def _result():
    def scores_of(images):
        s = images.flatten(1).sum(1).double()
        return {A.SQ_ERR: s, A.BCE: s / 2, A.MAHALANOBIS: -s, A.PCA_SCORE: s * 3}

    gen = torch.Generator().manual_seed(0)
    normal = torch.rand(40, 1, 6, 6, generator=gen) * 0.5
    outside = {A.SHIFT: {"bright": normal + 0.5}, A.OOD: {"other": torch.rand(30, 1, 6, 6, generator=gen)}}
    thresholds = dict.fromkeys(A.SCORES, 10.0)
    result = A.evaluate_anomaly(scores_of, normal, outside, thresholds, 0.9, extreme_n=3)
    result.details["served_score"] = A.SQ_ERR
    return normal, result


def test_the_table_has_a_row_per_outside_set_and_marks_the_best_autoencoder_score():
    _, result = _result()
    ((heading, text, table),) = section({A.ANOMALY: result.metrics}, {A.ANOMALY: result.details})
    assert heading == "Anomaly detection" and "0.9 quantile" in text
    assert [row[0] for row in table.rows] == ["other data set: other", "shifted copy: bright"]
    # sq_err and bce tie at AUROC 1; the first autoencoder score wins, PCA (also 1) is never marked.
    assert table.rows[1][1:5] == ["1.000 *", "1.000", "0.000", "1.000"]
    assert section({}, {}) == []


def test_the_figures_are_drawn_in_report_order(tmp_path):
    normal, result = _result()
    figures = draw(normal, result.details, result.metrics, tmp_path)
    assert [f.path.name for f in figures] == [HISTOGRAMS, ROC, EXTREMES]
    assert all(f.path.stat().st_size > 1000 for f in figures)
    assert draw(normal, {}, {}, tmp_path) == []
