"""The evaluate stage's function on tiny synthetic data: every key, PCA beside the model, the
worst images; the figures and the report built from its output."""

import json
import re

import pytest
import torch

from aeflow.config.instantiate import instantiate_datamodule, instantiate_model
from aeflow.config.schema import EvaluateConfig
from aeflow.evaluation import metrics as M
from aeflow.evaluation import scoring
from aeflow.evaluation.evaluate import evaluate, worst_images
from aeflow.evaluation.scoring import fit_pca, probe_data, probe_subset, score_codes
from aeflow.reporting import figures, report


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    """The default config on tiny synthetic data with 8-D codes, evaluated once for this module."""
    from aeflow.config.params import compose
    from tests.conftest import make_synthetic_idx

    tmp = tmp_path_factory.mktemp("eval")
    cfg = compose(
        [
            "model.latent_dim=8",
            "model.encoder.latent_dim=8",
            "model.decoder.latent_dim=8",
            "data.batch_size=16",
            "data.val_size=20",
            "evaluate.probe_train_size=100",
            "evaluate.worst_n=4",
        ]
    )
    cfg.data.files = make_synthetic_idx(tmp / "data")
    cfg.paths.data = str(tmp / "data")
    torch.manual_seed(0)
    model = instantiate_model(cfg).eval()
    dm = instantiate_datamodule(cfg)
    return cfg, model, dm, evaluate(cfg, model, dm)


def test_metrics_keep_the_original_keys_and_add_pca_and_probes(result):
    cfg, model, dm, res = result
    m = res.metrics
    for key in (M.SQ_ERR, M.MSE, M.BCE, M.PSNR, M.SSIM, M.KNN, M.LOGREG, M.SQ_ERR_FP16, M.SQ_ERR_INT8):
        assert key in m["test"] and key in m["pca"], key
    assert set(m["test"][M.BY_DIGIT]) == {str(d) for d in range(10)}
    assert set(m["pixels"]) == {M.KNN, M.LOGREG}
    assert m["compression"]["bytes_int8"] == 8 and m["compression"]["bytes_float32"] == 32
    assert m["latent_dim"] == 8
    # The synthetic classes are bright squares at class-dependent places: pixels separate them.
    assert m["pixels"][M.KNN] >= 0.8 and m["pixels"][M.LOGREG] >= 0.8  # chance: 0.1
    # PCA's number is the PCA reconstruction error computed directly.
    test_x = dm.splits["test"][0].double() / 255
    pca = fit_pca(dm.splits["train"][0], 8)
    direct = M.sq_err_per_image(pca.decode(pca.encode(test_x)), test_x.flatten(1)).mean()
    assert m["pca"][M.SQ_ERR] == pytest.approx(float(direct), rel=1e-4)
    assert m["test"][M.MSE] == pytest.approx(m["test"][M.SQ_ERR] / 784)
    # The metrics file stays compact: no per-digit tables but the one kept key.
    flat = [k for k in json.dumps(m).split('"') if k.isdigit()]
    assert len(flat) == 10


def test_details_hold_per_digit_tables_and_the_worst_images(result):
    cfg, model, dm, res = result
    by = res.details["by_digit"]
    assert set(by) == {"test", "pca"} and set(by["pca"]["3"]) >= {M.SQ_ERR, M.SSIM, M.PSNR, "count"}
    worst = res.details["worst"]
    assert len(worst) == 4
    errors = [w[M.SQ_ERR] for w in worst]
    assert errors == sorted(errors, reverse=True)
    x = dm.splits["test"][0][worst[0]["index"]].double() / 255
    assert errors[0] == pytest.approx(
        float(M.sq_err_per_image(model(x[None, None].float()).detach().double(), x[None, None])), abs=1e-3
    )
    assert {r["model"] for r in res.per_digit_rows} == {"autoencoder", "PCA"}
    assert len(res.per_digit_rows) == 20


def test_worst_images_and_probe_subset():
    sq = torch.tensor([1.0, 5.0, 3.0, 4.0])
    assert [w["index"] for w in worst_images(sq, torch.tensor([0, 1, 2, 3]), 2)] == [1, 3]
    sub = probe_subset(100, 10, seed=1)
    assert len(sub) == 10 and sub.unique().numel() == 10 and torch.equal(sub, probe_subset(100, 10, 1))
    assert torch.equal(probe_subset(5, 10, 0), torch.arange(5))


def test_probe_subsample_is_capped_by_bytes_and_scoring_streams_the_test_split(monkeypatch):
    gen = torch.Generator().manual_seed(0)
    shape = (3, 64, 64)  # 49,152 bytes of float32 per image
    cap = 20
    monkeypatch.setattr(scoring, "PROBE_BYTES", cap * 4 * 3 * 64 * 64 + 100)
    train = (
        torch.randint(0, 256, (cap + 50, *shape), dtype=torch.uint8, generator=gen),
        torch.zeros(cap + 50),
    )
    test = (
        torch.randint(0, 256, (40, *shape), dtype=torch.uint8, generator=gen),
        torch.zeros(40, dtype=torch.long),
    )
    config = EvaluateConfig(probe_train_size=10**6, knn_k=1, logreg_max_iter=1)
    pick, train_x, _, test_images, _ = probe_data(train, test, config, seed=0)
    assert len(pick) == cap and train_x.dtype == torch.float32 and train_x.shape == (cap, *shape)
    assert test_images.dtype == torch.uint8  # scored batch by batch, never made float whole

    def identity(x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)

    summary, _, sq = score_codes(
        identity, identity, train_x[:8], train[1][:8], test_images, test[1], config, False
    )
    assert torch.equal(sq, torch.zeros(40, dtype=torch.float64)) and summary[M.SQ_ERR] == 0.0


def test_interpolation_pairs_join_different_digits():
    labels = torch.arange(30) % 10
    pairs = figures.interpolation_pairs(labels, 12)
    assert len(pairs) == 12 and len(set(pairs)) == 12
    assert all(labels[a] != labels[b] for a, b in pairs)
    assert pairs[0] == (0, 5)


def test_settings_are_validated(tiny_cfg):
    from aeflow.config.schema import validate
    from aeflow.errors import ConfigError

    tiny_cfg.evaluate.knn_k = 0
    with pytest.raises(ConfigError, match="evaluate.knn_k=0"):
        validate(tiny_cfg, sections=("evaluate", "visualize"))
    tiny_cfg.evaluate.knn_k = 5
    from omegaconf import MISSING, OmegaConf

    OmegaConf.set_struct(tiny_cfg, False)
    tiny_cfg.visualize.bogus = 1
    with pytest.raises(ConfigError, match="visualize"):
        validate(tiny_cfg, sections=("evaluate", "visualize"))
    assert EvaluateConfig().probe_train_size == MISSING  # the value lives in conf/config.yaml only


def _figures_and_report(cfg, model, dm, res, tmp_path):
    test_images, test_labels = dm.splits["test"]
    x = test_images.unsqueeze(1).float() / 255
    out = tmp_path / "fig"
    drawn = [
        figures.worst_reconstructed(x, model, res.details["worst"], out / figures.WORST),
        figures.interpolation(
            x, test_labels, model, figures.interpolation_pairs(test_labels, 3), 5, out / figures.INTERPOLATION
        ),
        figures.per_digit_bars(res.details["by_digit"], M.SQ_ERR, out / figures.PER_DIGIT),
    ]
    train = {"best_val_loss": 0.05, "epochs": 2, "train_time_s": 1.5}
    figs = [report.Figure(p, f"caption {p.stem}") for p in drawn]
    md_path = tmp_path / "reports" / "report.md"
    return drawn, report.build(cfg, res.metrics, res.details, train, figs, md_path, run_id="abc123")


def test_figures_and_report_render_with_the_runs_numbers(result, tmp_path):
    cfg, model, dm, res = result
    drawn, (html, md) = _figures_and_report(cfg, model, dm, res, tmp_path)
    for path in drawn:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    m = res.metrics
    for text in (html, md):
        assert report.fmt(m["test"][M.SQ_ERR]) in text and report.fmt(m["pca"][M.SQ_ERR]) in text
        assert report.fmt(m["pixels"][M.KNN]) in text and "abc123" in text
        assert "not shown" in text  # 8-D codes: the 2006 reference does not apply
    # Self-contained: every image inlined, nothing fetched.
    assert html.count('src="data:image/png;base64,') == 3
    assert not re.search(r'(src|href)="(?!data:)', html)
    assert "](../fig/worst.png)" in md


def test_report_shows_the_2006_reference_for_30d_codes_on_mnist(result, tmp_path):
    import copy

    cfg, model, dm, res = result
    res = copy.deepcopy(res)
    res.metrics["latent_dim"] = 30
    _, (html, md) = _figures_and_report(cfg, model, dm, res, tmp_path)
    for text in (html, md):
        assert "Hinton &amp; Salakhutdinov 2006" in text or "Hinton & Salakhutdinov 2006" in text
        assert "3.00" in text and "13.87" in text
