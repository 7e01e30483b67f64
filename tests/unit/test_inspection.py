"""Inspection of a packed MVTec-layout test split: the PCA baseline, both maps, the preset."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aeflow.config.params import compose
from aeflow.config.schema import validate
from aeflow.data.mvtec import MVTecSplits, pack_mvtec, spec_from_config
from aeflow.data.mvtec_synth import generate
from aeflow.errors import ConfigError
from aeflow.evaluation.inspection import (
    InspectionConfig,
    evaluate_inspection,
    extremes,
    fit_pca_baseline,
    inspect_model,
    pca_reconstruct,
)
from aeflow.evaluation.pca import PCA
from tests.helpers import REPO


def conf_node() -> dict:
    """evaluate.inspection as conf/ composes it."""
    return dict(compose([], REPO / "conf").evaluate.inspection)


def settings(**overrides) -> InspectionConfig:
    return InspectionConfig.from_mapping({**conf_node(), **overrides})


def test_gram_pca_equals_the_covariance_pca():
    images = torch.randint(0, 256, (30, 2, 5, 5), dtype=torch.uint8)
    gram = fit_pca_baseline(images, 6, max_images=100)
    exact = PCA(6).fit(images.double() / 255)
    assert torch.allclose(gram.mean, exact.mean)
    assert torch.allclose(gram.explained_variance, exact.explained_variance, rtol=1e-8)
    # The same subspace: projections agree whatever each vector's sign.
    x = images[:4].double() / 255
    assert torch.allclose(gram.decode(gram.encode(x)), exact.decode(exact.encode(x)), atol=1e-8)


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    work = tmp_path_factory.mktemp("inspection")
    root = generate(work / "src", "tex", n_train=60, n_test=4, size=32, seed=0)
    cfg = compose(
        ["experiment=inspection", f"data.path={root}", "data.image_size=[32,32]", "data.input_features=1024"],
        REPO / "conf",
    )
    validate(cfg)
    spec = spec_from_config(cfg.data)
    pack_mvtec(root, work / "packed", spec, workers=1, progress=False)
    return cfg, MVTecSplits(work / "packed", spec)


def test_pca_maps_find_the_generated_defects_and_ssim_the_structural_ones(packed):
    _, splits = packed
    splits.setup()
    images, labels = splits.splits["test"]
    pca = fit_pca_baseline(splits.splits["train"][0], 16, 1000)
    config = settings(batch_size=7)  # batches that do not divide the split
    result = evaluate_inspection(
        {"pca": pca_reconstruct(pca)}, images, splits.test_masks(), labels, splits.defect_types, config
    )
    ssim, l2 = result.metrics["pca_ssim"], result.metrics["pca_l2"]
    assert set(ssim) == {"all", "rotated", "scratch", "smooth", "stain"}
    assert ssim["all"]["pixel_auroc"] > 0.9 and ssim["all"]["aupro"] > 0.7
    # Defects that keep the mean intensity: SSIM's per-region overlap beats L2's.
    assert ssim["smooth"]["aupro"] > l2["smooth"]["aupro"]
    assert result.image_scores["pca_ssim"].shape == (20,)
    assert "pca_l2/scratch/aupro" in result.flat()


def test_a_model_that_copies_its_input_finds_nothing(packed):
    cfg, splits = packed
    result = inspect_model(torch.nn.Identity(), splits, settings(maps=["l2"]), seed=cfg.seed)
    # Every map is 0: every pixel ties, so the ranking is chance.
    assert result.metrics["ae_l2"]["all"]["pixel_auroc"] == pytest.approx(0.5)
    assert result.metrics["ae_l2"]["all"]["image_auroc"] == pytest.approx(0.5)


def test_the_preset_fits_its_data():
    cfg = compose(["experiment=inspection", "data.path=/data/bottle"], REPO / "conf")
    validate(cfg)
    assert cfg.data._target_.endswith("MVTecDataModule")
    assert cfg.model.encoder.image_size == [64, 64] and cfg.model.decoder.out_channels == 1


@pytest.mark.parametrize(
    ("node", "message"),
    [
        ({"map": "ssim"}, r"unknown key\(s\) \['map'\]; allowed: maps, ssim_window"),
        ({"maps": []}, r"evaluate.inspection.maps=\[\]"),
        ({"maps": ["ssim"], "ssim_window": 4}, "inspection.ssim_window=4: must be odd"),
        ({"n_bins": 0}, "evaluate.inspection.n_bins=0: must be >= 1"),
    ],
)
def test_bad_inspection_settings_are_named(node, message):
    with pytest.raises(ConfigError, match=message):
        InspectionConfig.from_mapping({**conf_node(), **node})


def test_a_missing_inspection_setting_is_named_not_defaulted():
    node = conf_node()
    del node["top_k"]
    with pytest.raises(ConfigError, match=r"missing key\(s\) \['top_k'\]"):
        InspectionConfig.from_mapping(node)


def test_extremes_name_each_types_clearest_and_worst_images():
    scores = np.array([0.1, 0.9, 0.5, 0.7, 0.2, 0.3])
    labels = np.array([0, 1, 1, 0, 1, 2])
    out = extremes(scores, labels, ["good", "dent", "scratch", "hole"], n=1)
    assert out["good"] == {"flagged": [3], "missed": [0]}  # 0.7: the worst false alarm
    assert out["dent"] == {"flagged": [1], "missed": [4]}
    assert out["scratch"] == {"flagged": [5], "missed": [5]} and "hole" not in out


def test_the_preset_trains_on_a_packed_category_and_is_inspected(packed):
    import pytorch_lightning as pl

    from aeflow.config.instantiate import instantiate_datamodule, instantiate_model

    cfg, splits = packed
    cfg = cfg.copy()
    cfg.paths.data = str(splits.data_dir)
    cfg.data.batch_size = 8
    model, datamodule = instantiate_model(cfg), instantiate_datamodule(cfg)
    trainer = pl.Trainer(
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=datamodule)
    result = inspect_model(model.net, splits, settings(pca_components=4), seed=cfg.seed)
    assert set(result.metrics) == {"ae_l2", "ae_ssim", "pca_l2", "pca_ssim"}
    assert 0 <= result.metrics["ae_ssim"]["all"]["aupro"] <= 1
    assert len(result.image_scores["ae_ssim"]) == len(splits.splits["test"][1])
