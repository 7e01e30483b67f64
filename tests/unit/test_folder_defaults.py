"""What a new user's folder gets without settings: its size and colour found and named, and a
batch larger than a small training split shrunk to it."""

from __future__ import annotations

import logging

import pytest

from aeflow.data.pack import PackSpec, pack_folder, survey
from aeflow.data.packed import PackedDataModule
from tests.image_folders import write_classes, write_images


def test_the_most_common_size_and_colour_are_found_and_a_conversion_is_named(tmp_path, caplog):
    write_images(tmp_path / "src" / "a", 12, mode="RGB", size=(32, 24))
    write_images(tmp_path / "src" / "b", 3, mode="L", size=(40, 40), start=100)
    found = survey(
        tmp_path / "src", [p.relative_to(tmp_path / "src") for p in (tmp_path / "src").rglob("*.png")]
    )
    assert (found.image_size, found.channels, found.sampled) == ((32, 24), 3, 15)
    assert found.share == pytest.approx(12 / 15)
    with caplog.at_level(logging.INFO, logger="aeflow.data.pack"):
        pack_folder(tmp_path / "src", tmp_path / "out", PackSpec((28, 28)), workers=1, progress=False)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        "packed as 28x28 grey" in w
        and "-S data.image_size=[32,24] -S data.channels=3 -S data.input_features=2304" in w
        for w in warned
    ), warned
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="aeflow.data.pack"):
        pack_folder(tmp_path / "src", tmp_path / "out", PackSpec((32, 24), 3), workers=1, progress=False)
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("32x24 RGB" in r.getMessage() for r in caplog.records)


def test_a_batch_larger_than_the_training_split_becomes_its_size(tmp_path, caplog):
    write_classes(tmp_path / "src", {"a": 20, "b": 20})
    spec = PackSpec((28, 28), val_size=0.2, test_size=0.2)
    pack_folder(tmp_path / "src", tmp_path / "out", spec, workers=1, progress=False)
    dm = PackedDataModule(str(tmp_path / "out"), val_size=0.2, test_size=0.2, batch_size=256)
    with caplog.at_level(logging.WARNING, logger="aeflow.data.packed"):
        dm.setup("fit")
    n_train = len(dm.splits["train"][1])
    assert dm.batch_size == n_train < 256
    assert f"data.batch_size=256 is larger than the training split ({n_train} images)" in caplog.text
    batches = list(dm.train_dataloader())
    assert len(batches) == 1 and len(batches[0][0]) == n_train
