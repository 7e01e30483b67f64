"""Anomaly scores, separation metrics and the threshold on tiny tensors with known answers."""

import pytest
import torch

from aeflow.evaluation import anomaly as A
from aeflow.evaluation.pca import PCA


def test_mahalanobis_distance_matches_the_formula_for_a_known_gaussian():
    gen = torch.Generator().manual_seed(0)
    codes = torch.randn(20000, 2, generator=gen, dtype=torch.float64) * torch.tensor([1.0, 3.0]) + 5.0
    g = A.CodeGaussian.fit(codes, shrinkage=1e-6)
    # Fitted mean ~ (5, 5), covariance ~ diag(1, 9): the distance of (6, 8) is 1 + 1.
    assert g.distance(torch.tensor([[6.0, 8.0]])).item() == pytest.approx(2.0, rel=0.05)
    assert g.distance(g.mean[None]).item() == pytest.approx(0.0, abs=1e-12)


def test_shrinkage_keeps_dead_code_units_finite_and_is_checked():
    codes = torch.randn(50, 3, generator=torch.Generator().manual_seed(1))
    codes[:, 2] = 0.0  # a dead unit: singular covariance
    d = A.CodeGaussian.fit(codes).distance(torch.ones(4, 3))
    assert torch.isfinite(d).all() and (d > 0).all()
    with pytest.raises(ValueError, match="shrinkage=0"):
        A.CodeGaussian.fit(codes, shrinkage=0)
    with pytest.raises(ValueError, match="1 training codes"):
        A.CodeGaussian.fit(codes[:1])


def test_shrinkage_is_ledoit_wolfs_on_few_codes_and_the_floor_on_many():
    from sklearn.covariance import ledoit_wolf_shrinkage

    gen = torch.Generator().manual_seed(2)
    few = torch.randn(30, 20, generator=gen, dtype=torch.float64)
    assert A.CodeGaussian.fit(few).shrinkage == pytest.approx(ledoit_wolf_shrinkage(few.numpy()))
    assert A.CodeGaussian.fit(few).shrinkage > 0.5  # 30 codes say little about 20 dimensions
    many = torch.randn(20000, 4, generator=gen, dtype=torch.float64) * torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert A.CodeGaussian.fit(many).shrinkage == A.MIN_SHRINKAGE
    assert A.CodeGaussian.fit(many, shrinkage=0.5).shrinkage == 0.5


def test_precision_stays_well_conditioned_for_collinear_and_dead_code_units():
    gen = torch.Generator().manual_seed(3)
    codes = torch.randn(5000, 8, generator=gen, dtype=torch.float64)
    codes[:, 1] = 2 * codes[:, 0]  # collinear
    codes[:, 2:5] = 0.7  # dead: constant
    eig = torch.linalg.eigvalsh(A.CodeGaussian.fit(codes).precision)
    assert eig.max() / eig.min() <= 1 + 8 / A.MIN_SHRINKAGE


def test_separation_of_perfect_reversed_and_tied_scores():
    normal, anomalous = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([3.0, 4.0])
    perfect = A.separation(normal, anomalous)
    assert perfect == {A.AUROC: 1.0, A.AUPRC: 1.0, A.FPR95: 0.0}
    reversed_ = A.separation(anomalous, normal)
    assert reversed_[A.AUROC] == 0.0 and reversed_[A.FPR95] == 1.0
    assert A.separation(torch.zeros(4), torch.zeros(4))[A.AUROC] == 0.5
    with pytest.raises(ValueError, match="got 0 and 2"):
        A.separation(torch.zeros(0), anomalous)


@pytest.mark.parametrize("kind", ["continuous", "many ties", "two values"])
def test_separation_and_roc_equal_scikit_learns_to_the_last_bit(kind):
    import numpy as np
    from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

    gen = torch.Generator().manual_seed(1)
    for _ in range(20):
        normal = torch.randn(int(torch.randint(1, 2000, (1,), generator=gen)), generator=gen).double()
        anomalous = torch.randn(int(torch.randint(1, 2000, (1,), generator=gen)), generator=gen).double() + 1
        if kind == "many ties":
            normal, anomalous = normal.round(decimals=1), anomalous.round(decimals=1)
        elif kind == "two values":
            normal, anomalous = (normal > 0).double(), (anomalous > 1.5).double()
        y = np.concatenate([np.zeros(len(normal)), np.ones(len(anomalous))])
        s = torch.cat([normal, anomalous]).numpy()
        fpr, tpr, _ = roc_curve(y, s)
        assert A.separation(normal, anomalous) == {
            A.AUROC: roc_auc_score(y, s),
            A.AUPRC: average_precision_score(y, s),
            A.FPR95: fpr[(tpr >= 0.95).argmax()],
        }
        grid = np.linspace(0, 1, 101)
        assert A.roc_points(normal, anomalous)["tpr"] == [
            round(float(v), 4) for v in np.interp(grid, fpr, tpr)
        ]


def test_fpr_at_95_tpr_counts_the_normal_images_above_the_cut():
    # 20 anomalies at 10..29; 95% TPR keeps the 19 highest, cut at 11. Normals 0..9 and 12: one above.
    normal = torch.cat([torch.arange(10.0), torch.tensor([12.0])])
    assert A.separation(normal, torch.arange(10.0, 30.0))[A.FPR95] == pytest.approx(1 / 11)


def test_threshold_is_the_validation_quantile_and_flags_that_share():
    val = torch.arange(1000.0)
    t = A.threshold(val, 0.99)
    assert t == pytest.approx(989.01)
    assert A.flagged_share(val, t) == pytest.approx(0.01)
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match=f"quantile={bad}"):
            A.threshold(val, bad)


def test_histogram_counts_every_image_and_roc_goes_from_zero_to_one():
    normal, anomalous = torch.randn(500), torch.randn(300) + 2
    h = A.histogram(normal, anomalous, bins=10)
    assert sum(h["normal"]) == 500 and sum(h["anomalous"]) == 300 and len(h["edges"]) == 11
    roc = A.roc_points(normal, anomalous, n=11)
    assert roc["fpr"][0] == 0.0 and roc["fpr"][-1] == 1.0 and roc["tpr"][-1] == 1.0
    assert roc["tpr"] == sorted(roc["tpr"])


def _identity_model():
    def encode(x):
        return x.flatten(1)[:, :2] * 10

    def decode(z):
        return torch.zeros(len(z), 1, 2, 2)

    return encode, decode


def test_model_scores_are_the_reconstruction_errors_and_the_code_distance():
    encode, decode = _identity_model()
    x = torch.tensor([[[[0.0, 0.0], [0.0, 0.0]]], [[[1.0, 0.5], [0.0, 0.0]]]])
    g = A.CodeGaussian(mean=torch.zeros(2, dtype=torch.float64), precision=torch.eye(2, dtype=torch.float64))
    s = A.model_scores(encode, decode, g, x, batch=1)
    assert s[A.SQ_ERR].tolist() == pytest.approx([0.0, 1.25])
    assert s[A.MAHALANOBIS].tolist() == pytest.approx([0.0, 125.0])
    assert s[A.BCE][1] > s[A.BCE][0]


def test_pca_score_is_zero_for_images_in_the_span_and_positive_off_it():
    gen = torch.Generator().manual_seed(0)
    basis = torch.randn(2, 16, generator=gen, dtype=torch.float64)
    train = torch.randn(200, 2, generator=gen, dtype=torch.float64) @ basis
    pca = PCA(2).fit(train)
    inside = (torch.randn(5, 2, generator=gen, dtype=torch.float64) @ basis).view(5, 1, 4, 4)
    outside = torch.randn(5, 1, 4, 4, generator=gen, dtype=torch.float64)
    assert A.pca_scores(pca, inside).abs().max() < 1e-8
    assert (A.pca_scores(pca, outside) > 1e-2).all()


def test_detector_state_round_trips_through_json_and_scores_alike(tmp_path):
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(16, 3, generator=gen)

    def encode(x):
        return x.flatten(1) @ weight

    def decode(z):
        return torch.sigmoid(z @ weight.T).view(-1, 1, 4, 4)

    train, val = torch.rand(100, 1, 4, 4, generator=gen), torch.rand(200, 1, 4, 4, generator=gen)
    state = A.fit_detector(encode, decode, train, val, quantile=0.9, score=A.MAHALANOBIS)
    state.write(tmp_path / "detector.json")
    loaded = A.DetectorState.load(tmp_path / "detector.json")
    assert loaded.score == A.MAHALANOBIS and loaded.quantile == 0.9 and loaded.validation_images == 200
    assert loaded.gaussian.shrinkage == state.shrinkage >= A.MIN_SHRINKAGE
    val_scores = A.model_scores(encode, decode, loaded.gaussian, val)
    for name in A.MODEL_SCORES:
        assert A.flagged_share(val_scores[name], loaded.thresholds[name]) == pytest.approx(0.1, abs=0.006)
    with pytest.raises(ValueError, match="score='pca'"):
        A.fit_detector(encode, decode, train, val, quantile=0.9, score=A.PCA_SCORE)


def test_evaluate_anomaly_reports_every_score_for_every_set():
    def scores_of(images):
        s = images.flatten(1).sum(1).double()
        return {"plain": s, "negated": -s}

    normal = torch.zeros(10, 1, 2, 2)
    normal[:, 0, 0, 0] = torch.arange(10.0) / 100
    outsides = {"shift": {"bright": torch.ones(6, 1, 2, 2)}}
    result = A.evaluate_anomaly(
        scores_of,
        normal,
        outsides,
        {"plain": 0.055, "negated": 0.0},
        0.9,
        extreme_n=2,
        index=torch.arange(10) + 100,
    )
    m = result.metrics
    assert m["shift"]["bright"]["plain"][A.AUROC] == 1.0
    assert m["shift"]["bright"]["negated"][A.AUROC] == 0.0
    assert m["shift"]["bright"]["plain"][A.FLAGGED] == 1.0
    assert m[A.FLAGGED_TEST]["plain"] == pytest.approx(0.4)  # 0.06 .. 0.09 are above 0.055
    assert A.best_score(m, "shift", "bright") == ("plain", 1.0)
    assert result.details["extremes"]["plain"] == {"most": [109, 108], "least": [100, 101]}
    assert set(result.details["roc"]["shift/bright"]) == {"plain", "negated"}
