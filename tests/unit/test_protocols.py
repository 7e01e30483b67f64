"""The evaluate stage's anomaly protocols on tiny synthetic splits, with PCA as a linear autoencoder."""

import math

import pytest
import torch

from aeflow.errors import ConfigError
from aeflow.evaluation import anomaly as A
from aeflow.evaluation.anomaly import as_float
from aeflow.evaluation.pca import PCA
from aeflow.evaluation.protocols import MEAN, anomaly_evaluation


class LinearAutoencoder(torch.nn.Module):
    """PCA as encode/decode: a model whose scores are known to separate off-span images."""

    def __init__(self, pca: PCA) -> None:
        super().__init__()
        self.pca = pca

    def encode(self, x):
        return self.pca.encode(x).float()

    def decode(self, z):
        return self.pca.decode(z).float().clamp(0, 1)


def _images(labels, gen, side=12):
    """A bright bar whose row encodes the label, on faint noise: uint8 (N, side, side)."""
    images = torch.randint(0, 20, (len(labels), side, side), generator=gen, dtype=torch.uint8)
    for i, c in enumerate(labels.tolist()):
        images[i, c + 1, 2:10] = 255
    return images


SIZES = {"train": 300, "val": 100, "test": 200}


def _splits(classes=None, sizes=SIZES):
    gen = torch.Generator().manual_seed(0)
    out = {}
    for part, n in sizes.items():
        labels = torch.arange(n) % 10
        if classes is not None and part != "test":
            labels = torch.tensor(classes).repeat(n // len(classes))
        out[part] = (_images(labels, gen), labels)
    return out


def _run(splits, quantile=0.9, **kw):
    pca = PCA(4).fit(as_float(splits["train"][0]).double())
    return anomaly_evaluation(LinearAutoencoder(pca), pca, splits, quantile=quantile, **kw)


def test_every_protocol_reports_every_score_and_the_validation_threshold():
    splits = _splits()
    ood = torch.full((50, 12, 12), 128, dtype=torch.uint8)
    result = _run(splits, corruptions=["flip_ud", "invert"], ood_sets={"grey": ood})
    m = result.metrics
    assert set(m[A.SHIFT]) == {"flip_ud", "invert", MEAN}
    assert set(m[A.OOD]) == {"grey"} and A.OTHER_CLASSES not in m
    for sets in (m[A.SHIFT], m[A.OOD]):
        for scores in sets.values():
            assert set(scores) == set(A.SCORES)
    # Inverted images are far off the training span: every reconstruction error separates them.
    for score in (A.SQ_ERR, A.BCE, A.PCA_SCORE):
        assert m[A.SHIFT]["invert"][score][A.AUROC] > 0.99, score
    mean = m[A.SHIFT][MEAN][A.SQ_ERR][A.AUROC]
    expected = (m[A.SHIFT]["flip_ud"][A.SQ_ERR][A.AUROC] + m[A.SHIFT]["invert"][A.SQ_ERR][A.AUROC]) / 2
    assert mean == pytest.approx(expected)
    assert m[A.QUANTILE] == 0.9 and set(m[A.FLAGGED_TEST]) == set(A.SCORES)
    assert set(result.details["roc"]) == {"shift/flip_ud", "shift/invert", "ood/grey"}


def flagged_range(quantile: float, n_val: int, n_test: int, sigmas: float = 4) -> tuple[float, float]:
    """Where the share of clean test images above the validation scores' `quantile` falls.

    Validation and test images are drawn alike, so a test image's score exceeds the empirical
    quantile of n_val validation scores with a probability distributed Beta-like around
    p = 1 - quantile, variance p(1-p)/(n_val+2); the share of n_test images adds the binomial
    variance p(1-p)/n_test. `sigmas` standard deviations either side.
    """
    p = 1 - quantile
    sd = math.sqrt(p * (1 - p) * (1 / (n_val + 2) + 1 / n_test))
    return p - sigmas * sd, p + sigmas * sd


# 2,000 validation and 4,000 test images: for the 0.9 quantile the share flagged is 0.10 +- 0.033
# (4 sd), which excludes the 0.05 of a 0.95 quantile and the 0.20 of a 0.8 one. With the 100 and
# 200 of the other tests it would be 0.10 +- 0.15: no quantile between 0.8 and 0.95 could fail.
FLAGGED_SIZES = {"train": 300, "val": 2000, "test": 4000}


@pytest.mark.parametrize("quantile", [0.8, 0.9])
def test_the_threshold_flags_one_minus_its_quantile_of_clean_test_images(quantile):
    result = _run(_splits(sizes=FLAGGED_SIZES), quantile=quantile, corruptions=[])
    low, high = flagged_range(quantile, FLAGGED_SIZES["val"], FLAGGED_SIZES["test"])
    for score in A.SCORES:
        flagged = result.metrics[A.FLAGGED_TEST][score]
        assert low <= flagged <= high, f"{score}: {flagged:.4f} flagged, expected [{low:.4f}, {high:.4f}]"


def test_one_class_scores_the_other_classes_and_keeps_test_indices():
    splits = _splits(classes=[3])
    result = _run(splits, corruptions=[], classes=[3])
    assert A.SHIFT not in result.metrics  # no corruptions asked for: no shift protocol
    rest = result.metrics[A.OTHER_CLASSES]["rest"]
    assert rest[A.SQ_ERR][A.AUROC] > 0.9 and rest[A.PCA_SCORE][A.AUROC] > 0.9
    # Most/least anomalous normal images are named by their place in the whole test set: all 3s.
    labels = splits["test"][1]
    extremes = result.details["extremes"][A.SQ_ERR]
    assert all(int(labels[i]) == 3 for i in extremes["most"] + extremes["least"])


def test_unknown_score_or_corruption_is_a_config_error():
    with pytest.raises(ConfigError, match="evaluate.score='pca': allowed: sq_err, bce, mahalanobis"):
        _run(_splits(), score="pca")
    with pytest.raises(ConfigError, match=r"evaluate.corruptions: unknown \['fog'\]"):
        _run(_splits(), corruptions=["fog"])
