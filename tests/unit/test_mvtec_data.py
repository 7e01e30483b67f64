"""data=mvtec: scanning, checking and packing an MVTec-layout category with its masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from aeflow.config.params import compose
from aeflow.config.schema import validate
from aeflow.data.mvtec import MASKS_FILE, MVTecSplits, from_config, pack_mvtec, scan_mvtec, spec_from_config
from aeflow.data.mvtec_datamodule import MVTecDataModule
from aeflow.data.mvtec_synth import DEFECTS, generate
from aeflow.data.pack import PackSpec, pack_folder
from aeflow.errors import ConfigError, DataError
from tests.helpers import REPO
from tests.image_folders import truncate, write_images

SPEC = PackSpec((32, 32), channels=1, resize="resize", val_size=0.25, test_size=0)


@pytest.fixture(scope="module")
def category(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("mvtec"), "tex", n_train=16, n_test=3, size=32, seed=0)


def _png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_pack_keeps_defect_types_masks_and_train_good_only(category, tmp_path):
    manifest = pack_mvtec(category, tmp_path, SPEC, workers=1, progress=False)
    assert manifest["classes"] == ["good", *sorted(DEFECTS)]
    splits = MVTecSplits(tmp_path, SPEC)
    splits.setup()
    counts = {s: len(labels) for s, (_, labels) in splits.splits.items()}
    assert counts["train"] + counts["val"] == 16 and counts["val"] > 0 and counts["test"] == 15
    assert not splits.splits["train"][1].any() and not splits.splits["val"][1].any()  # all good
    files = (tmp_path / "test_files.txt").read_text().split()
    masks = splits.test_masks()
    images, labels = splits.splits["test"]
    assert masks.shape == (15, 32, 32) and masks.dtype == torch.uint8
    for name, label, image, mask in zip(files, labels.tolist(), images, masks, strict=True):
        kind = name.split("/")[1]
        assert splits.defect_types[label] == kind
        assert np.array_equal(image.numpy(), _png(category / name))  # 32x32 already: exact pixels
        if kind == "good":
            assert not mask.any()
        else:
            truth = _png(category / "ground_truth" / kind / (Path(name).stem + "_mask.png")) > 0
            assert np.array_equal(mask.numpy(), truth)


@pytest.mark.parametrize("resize", ["resize", "crop"])
def test_masks_get_their_images_geometry_and_stay_binary(tmp_path, resize):
    # A non-square category: a crop cuts the sides off, a resize squeezes them.
    root = tmp_path / "src"
    image = np.zeros((40, 60), np.uint8)
    image[10:30, 5:15] = 255  # a bright block with its mask exactly on it
    write_images(root / "train" / "good", 8, size=(40, 60))
    (root / "test" / "hole").mkdir(parents=True)
    (root / "ground_truth" / "hole").mkdir(parents=True)
    Image.fromarray(image).save(root / "test" / "hole" / "a.png")
    Image.fromarray(image).save(root / "ground_truth" / "hole" / "a_mask.png")
    spec = PackSpec((20, 20), channels=1, resize=resize, val_size=0.3, test_size=0)
    pack_mvtec(root, tmp_path / "out", spec, workers=1, progress=False)
    splits = MVTecSplits(tmp_path / "out", spec)
    splits.setup()
    mask = splits.test_masks()[0].numpy()
    packed = splits.splits["test"][0][0].numpy()
    assert set(np.unique(mask)) <= {0, 1}
    # The mask lies where the packed image is bright, whichever geometry.
    assert packed[mask == 1].mean() > 200 and packed[mask == 0].mean() < 60
    # Exactly the nearest-neighbour geometry of the image: a resize to 20x20, or a scale to
    # cover (30x20) and the centre cut out.
    truth = Image.fromarray(image > 0)
    if resize == "resize":
        expected = truth.resize((20, 20), Image.Resampling.NEAREST)
    else:
        expected = truth.resize((30, 20), Image.Resampling.NEAREST).crop((5, 0, 25, 20))
    assert np.array_equal(mask, np.asarray(expected, dtype=np.uint8)) and mask.any()


def _break(category: Path, tmp_path: Path) -> Path:
    import shutil

    root = tmp_path / "broken"
    shutil.copytree(category, root)
    return root


def test_every_missing_mask_is_named(category, tmp_path):
    root = _break(category, tmp_path)
    (root / "ground_truth" / "scratch" / "001_mask.png").unlink()
    (root / "ground_truth" / "stain" / "002_mask.png").unlink()
    with pytest.raises(DataError, match="2 defective") as err:
        scan_mvtec(root)
    assert "test/scratch/001.png: no mask ground_truth/scratch/001_mask.png" in str(err.value)
    assert "test/stain/002.png" in str(err.value)


def test_bad_and_wrongly_sized_masks_are_named_and_nothing_is_written(category, tmp_path):
    root = _break(category, tmp_path)
    truncate(root / "ground_truth" / "rotated" / "000_mask.png")
    Image.new("L", (31, 32)).save(root / "ground_truth" / "smooth" / "001_mask.png")
    with pytest.raises(DataError, match="2 bad image or mask") as err:
        pack_mvtec(root, tmp_path / "out", SPEC, workers=1, progress=False)
    message = str(err.value)
    assert "ground_truth/rotated/000_mask.png: unreadable mask" in message
    assert "ground_truth/smooth/001_mask.png: mask is 31x32 but its image 001.png is 32x32" in message
    assert not (tmp_path / "out" / "manifest.json").exists()
    assert not (tmp_path / "out" / MASKS_FILE).exists()


def test_layout_errors_say_where_to_point(tmp_path):
    with pytest.raises(DataError, match="no train/good/ folder; point data.path at one category"):
        scan_mvtec(tmp_path)


def test_a_folder_pack_is_refused(tmp_path):
    write_images(tmp_path / "src", 20)
    spec = PackSpec((28, 28), val_size=0.2, test_size=0.2)
    pack_folder(tmp_path / "src", tmp_path / "out", spec, workers=1, progress=False)
    with pytest.raises(DataError, match="not an MVTec-layout category"):
        MVTecSplits(tmp_path / "out", spec).setup()


def test_validation_split_is_seeded_and_stable(category, tmp_path):
    first = scan_mvtec(category, 0.25, split_seed=1)
    again = scan_mvtec(category, 0.25, split_seed=1)
    other = scan_mvtec(category, 0.25, split_seed=2)
    assert first.files == again.files and first.files["val"] != other.files["val"]


def test_config_composes_and_the_datamodule_serves_batches(category, tmp_path):
    overrides = ["data=mvtec", f"data.path={category}", "experiment=conv", "data.image_size=[32,32]"]
    cfg = compose(
        [*overrides, "data.channels=1", "data.input_features=1024", "data.val_size=0.25"], REPO / "conf"
    )
    validate(cfg)
    assert cfg.model.encoder.image_size == [32, 32] and cfg.model.encoder.in_channels == 1
    pack_mvtec(category, tmp_path, spec_from_config(cfg.data), workers=1, progress=False)
    cfg.paths.data = str(tmp_path)
    assert isinstance(from_config(cfg), MVTecSplits)
    kwargs = {k: v for k, v in cfg.data.items() if k != "_target_"}
    dm = MVTecDataModule(str(tmp_path), **{**kwargs, "batch_size": 4})
    dm.setup("fit")
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (4, 1, 32, 32) and images.dtype == torch.float32 and not labels.any()
    with pytest.raises(ConfigError, match="data.test_size=0.1: with data=mvtec the test split is the test/"):
        MVTecDataModule(str(tmp_path), **{**kwargs, "test_size": 0.1})
