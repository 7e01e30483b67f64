"""A folder of images: scanning, splitting, checking, packing, and memory-mapped batches."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from aeflow.config.params import compose
from aeflow.config.schema import validate
from aeflow.data import pack as pack_module
from aeflow.data.datamodule import batch_loader
from aeflow.data.folder import scan_folder
from aeflow.data.pack import PackSpec, pack_folder, read_manifest
from aeflow.data.packed import PackedDataModule
from aeflow.errors import ConfigError, DataError
from tests.image_folders import truncate, write_classes, write_images

GREY = PackSpec((28, 28), channels=1, val_size=0.2, test_size=0.2)


def module(data_dir: Path, spec: PackSpec, **kwargs) -> PackedDataModule:
    dm = PackedDataModule(
        str(data_dir),
        image_size=list(spec.image_size),
        channels=spec.channels,
        resize=spec.resize,
        val_size=spec.val_size,
        test_size=spec.test_size,
        split_seed=spec.split_seed,
        **kwargs,
    )
    dm.setup("fit")
    return dm


def split_of(out: Path) -> dict[str, str]:
    """{source file: split} of a pack."""
    return {
        name: split
        for split in ("train", "val", "test")
        for name in (out / f"{split}_files.txt").read_text().split()
    }


def test_rgb_class_folders_pack_to_exact_pixels_and_labels(tmp_path):
    write_classes(tmp_path / "src", {"cat": 40, "dog": 30}, mode="RGB", size=(32, 32))
    spec = PackSpec((32, 32), channels=3, val_size=0.2, test_size=0.2)
    manifest = pack_folder(tmp_path / "src", tmp_path / "out", spec, workers=2, progress=False)
    assert manifest["classes"] == ["cat", "dog"] and sum(manifest["counts"].values()) == 70
    for split in ("train", "val", "test"):
        images = np.load(tmp_path / "out" / f"{split}_images.npy")
        labels = np.load(tmp_path / "out" / f"{split}_labels.npy")
        names = (tmp_path / "out" / f"{split}_files.txt").read_text().split()
        assert images.shape == (len(names), 3, 32, 32) and images.dtype == np.uint8
        for row, label, name in zip(images, labels, names, strict=True):
            # already 32x32: the pixels are kept exactly, (H, W, C) -> (C, H, W)
            source = np.asarray(Image.open(tmp_path / "src" / name))
            assert np.array_equal(row, source.transpose(2, 0, 1))
            assert manifest["classes"][label] == name.split("/")[0]


def test_crop_and_resize_make_every_image_h_by_w(tmp_path):
    image = np.zeros((40, 80), np.uint8)
    image[:, 20:60] = 255  # a white centre square, black bands left and right
    (tmp_path / "src").mkdir()
    for i in range(10):
        Image.fromarray(image).save(tmp_path / "src" / f"{i}.png")
    crop = pack_module.decode_image(tmp_path / "src" / "0.png", PackSpec((20, 20), resize="crop"))
    # the centre square only (its edge columns blurred by the scaling)
    assert crop.shape == (1, 20, 20) and crop[0, :, 1:-1].min() == 255 and crop.min() > 200
    decoded = pack_module.decode_image(tmp_path / "src" / "0.png", PackSpec((20, 20), resize="resize"))
    assert decoded.shape == (1, 20, 20) and decoded[0, :, 0].max() == 0  # stretched: bands kept


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((20, 10), np.uint8)  # 10 wide, 20 tall; white top-left corner
    pixels[:5, :5] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: viewers rotate it 90 degrees clockwise
    Image.fromarray(pixels).save(tmp_path / "photo.png", exif=exif)
    decoded = pack_module.decode_image(tmp_path / "photo.png", PackSpec((10, 20)))
    assert np.array_equal(decoded[0], np.rot90(pixels, k=-1))  # upright: 20 wide, 10 tall


def test_folder_without_subfolders_is_unlabeled(tmp_path):
    write_images(tmp_path / "src", 50)
    manifest = pack_folder(tmp_path / "src", tmp_path / "out", GREY, workers=1, progress=False)
    assert manifest["classes"] == []
    dm = module(tmp_path / "out", GREY, batch_size=8)
    assert not dm.labelled
    assert all(bool((labels == -1).all()) for _, labels in dm.splits.values())
    dm.packed.setup("test")  # what evaluation calls: it runs without labels, leaving out label metrics
    assert not dm.packed.labelled


def test_every_bad_file_is_named_and_nothing_is_written(tmp_path):
    paths = write_classes(tmp_path / "src", {"a": 20, "b": 20})
    truncate(paths[3])
    paths[25].write_bytes(b"")
    Image.new("I;16", (28, 28)).save(paths[30])  # a 16-bit PNG
    (tmp_path / "src" / "b" / "notes.txt").write_text("not an image: left out")
    with pytest.raises(DataError) as err:
        pack_folder(tmp_path / "src", tmp_path / "out", GREY, workers=2, progress=False)
    message = str(err.value)
    assert message.startswith("3 bad image file(s)")
    assert "a/img_00003.png: unreadable image" in message
    assert "b/img_00005.png: empty file (0 bytes)" in message
    assert "b/img_00010.png: mode I;16 is not supported" in message
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == []  # no array, no temporary file


def test_an_interrupted_pack_leaves_no_array_a_reader_accepts(tmp_path, monkeypatch):
    write_images(tmp_path / "src", 60)
    out = tmp_path / "out"
    pack_folder(tmp_path / "src", out, GREY, workers=1, progress=False)
    write_images(tmp_path / "src", 20, start=60, seed=1)
    # A process killed by SIGKILL mid-write leaves its temporary file behind.
    (out / ".train_images.npy.abc123.tmp").write_bytes(b"half an array")
    calls = []
    real_decode = pack_module.decode_image

    def interrupted(path, spec):
        calls.append(path)
        if len(calls) == 50:
            raise KeyboardInterrupt
        return real_decode(path, spec)

    monkeypatch.setattr(pack_module, "decode_image", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pack_folder(tmp_path / "src", out, GREY, workers=1, progress=False)
    # The previous pack is intact and still complete (its manifest matches its arrays).
    manifest = read_manifest(out)
    assert manifest["counts"] == {s: len(np.load(out / f"{s}_labels.npy")) for s in ("train", "val", "test")}
    monkeypatch.setattr(pack_module, "decode_image", real_decode)
    manifest = pack_folder(tmp_path / "src", out, GREY, workers=1, progress=False)
    assert sum(manifest["counts"].values()) == 80
    assert not list(out.glob(".*.tmp"))


def test_a_pack_interrupted_while_renaming_its_arrays_is_refused_then_rebuilt(tmp_path, monkeypatch):
    write_images(tmp_path / "src", 60)
    out = tmp_path / "out"
    old = pack_folder(tmp_path / "src", out, GREY, workers=1, progress=False)
    write_images(tmp_path / "src", 40, start=60, seed=1)
    # The commit step: every array is decoded and checked, then renamed into place one after
    # another (the test split's three files first). The fourth rename fails (a full disk, a
    # kill): the test split is the new pack's, train and val are the old one's, each consistent.
    real_replace, renamed = os.replace, []

    def failing_fourth(src, dst, **kwargs):
        if Path(dst).parent == out and not Path(dst).name.startswith("."):  # not a temporary's write
            if len(renamed) == 3:
                raise OSError(28, "No space left on device")
            renamed.append(Path(dst).name)
        return real_replace(src, dst, **kwargs)

    monkeypatch.setattr(os, "replace", failing_fourth)
    with pytest.raises(OSError, match="No space left"):
        pack_folder(tmp_path / "src", out, GREY, workers=1, progress=False)
    monkeypatch.setattr(os, "replace", real_replace)
    assert sorted(renamed) == ["test_files.txt", "test_images.npy", "test_labels.npy"]
    lengths = {s: len(np.load(out / f"{s}_labels.npy")) for s in ("train", "val", "test")}
    assert lengths["test"] > old["counts"]["test"] and lengths["train"] == old["counts"]["train"], lengths
    # Half committed: no manifest, so no reader takes the mix for a pack.
    with pytest.raises(DataError, match="manifest.json missing: never packed, or the pack was interrupted"):
        module(out, GREY)

    manifest = pack_folder(tmp_path / "src", out, GREY, workers=1, progress=False)
    dm = module(out, GREY)
    assert sum(manifest["counts"].values()) == 100
    assert manifest["counts"] == {s: len(np.load(out / f"{s}_labels.npy")) for s in ("train", "val", "test")}
    assert {s: len(labels) for s, (_, labels) in dm.splits.items()} == manifest["counts"]
    assert not list(out.glob(".*.tmp"))


def test_no_manifest_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="manifest.json missing"):
        module(tmp_path, GREY)


def test_settings_other_than_the_packed_ones_are_refused(tmp_path):
    write_images(tmp_path / "src", 40)
    pack_folder(tmp_path / "src", tmp_path / "out", GREY, workers=1, progress=False)
    with pytest.raises(DataError, match="re-pack"):
        module(tmp_path / "out", PackSpec((28, 28), channels=1, val_size=0.3, test_size=0.2))


def test_adding_files_keeps_every_old_files_split(tmp_path):
    write_classes(tmp_path / "src", {"a": 150, "b": 150})
    pack_folder(tmp_path / "src", tmp_path / "out", GREY, workers=1, progress=False)
    before = split_of(tmp_path / "out")
    assert {s: list(before.values()).count(s) for s in ("val", "test")} == pytest.approx(
        {"val": 60, "test": 60}, abs=20
    )
    write_classes(tmp_path / "src", {"a": 50, "b": 50}, start=150)
    pack_folder(tmp_path / "src", tmp_path / "out", GREY, workers=1, progress=False)
    after = split_of(tmp_path / "out")
    assert len(after) == 400 and {k: after[k] for k in before} == before
    assert {after[k] for k in set(after) - set(before)} == {"train", "val", "test"}


def test_split_folders_are_kept_and_val_is_drawn_from_train(tmp_path):
    write_classes(tmp_path / "src" / "train", {"a": 50, "b": 50})
    write_classes(tmp_path / "src" / "test", {"a": 10, "b": 10}, start=500)
    index = scan_folder(tmp_path / "src", val_size=0.2, test_size=0.3)
    assert index.split_folders == ["train", "test"] and index.classes == ["a", "b"]
    assert len(index.files["test"]) == 20 and all(f.startswith("test/") for f in index.files["test"])
    assert 5 < len(index.files["val"]) < 40 and all(f.startswith("train/") for f in index.files["val"])
    assert len(index.files["train"]) + len(index.files["val"]) == 100


def test_mixed_layout_is_refused(tmp_path):
    write_images(tmp_path / "src", 5)
    write_images(tmp_path / "src" / "cls", 5)
    with pytest.raises(DataError, match="directly in the folder"):
        scan_folder(tmp_path / "src")


def test_memory_mapped_batches_equal_in_memory_batches(tmp_path):
    write_classes(tmp_path / "src", {"a": 100, "b": 100}, mode="L")
    pack_folder(tmp_path / "src", tmp_path / "out", GREY, workers=1, progress=False)
    mapped = module(tmp_path / "out", GREY, batch_size=16, seed=7)
    loaded = module(tmp_path / "out", GREY, batch_size=16, seed=7, in_memory=True)
    maps = Path("/proc/self/maps").read_text()
    assert str(tmp_path / "out" / "train_images.npy") in maps  # really memory-mapped
    images, labels = loaded.splits["train"]
    # The in-memory path of MNIST: batches of plain tensors.
    reference = batch_loader(images.clone(), labels.clone(), 16, shuffle=True, seed=7)
    for epoch in (0, 1):
        batches = []
        for loader in (mapped.train_dataloader(), loaded.train_dataloader(), reference):
            loader.sampler.set_epoch(epoch)
            batches.append(list(loader))
        assert len(batches[0]) == len(reference) > 1
        for a, b, c in zip(*batches, strict=True):
            assert a[0].shape == (16, 1, 28, 28) or len(a[0]) < 16
            assert torch.equal(a[0], b[0]) and torch.equal(a[0], c[0]) and torch.equal(a[1], c[1])
    first = [b[1] for b in mapped.train_dataloader()]
    assert not torch.equal(torch.cat(first), labels)  # shuffled


def test_rgb_batches_are_b_c_h_w(tmp_path):
    write_images(tmp_path / "src", 60, mode="RGB", size=(16, 16))
    spec = PackSpec((16, 16), channels=3, val_size=0.2, test_size=0.2)
    pack_folder(tmp_path / "src", tmp_path / "out", spec, workers=1, progress=False)
    images, _ = next(iter(module(tmp_path / "out", spec, batch_size=8).val_dataloader()))
    assert images.shape == (8, 3, 16, 16) and 0 <= images.min() and images.max() <= 1


def folder_cfg(*overrides: str):
    return compose(["data=folder", "data.path=/images", *overrides])


def test_folder_config_sizes_the_models():
    cfg = folder_cfg("data.image_size=[32,32]", "data.input_features=1024")
    validate(cfg)
    assert cfg.model.encoder.in_features == cfg.model.decoder.out_features == 1024
    cfg = folder_cfg(
        "data.image_size=[32,32]", "data.channels=3", "data.input_features=3072", "experiment=conv"
    )
    validate(cfg)
    assert cfg.model.encoder.in_channels == cfg.model.decoder.out_channels == 3
    assert cfg.model.encoder.image_size == cfg.model.decoder.image_size == [32, 32]
    assert cfg.data.files == {
        "image_size": [32, 32],
        "resize": "crop",
        "channels": 3,
        "val_size": 0.1,
        "test_size": 0.1,
        "split_seed": 0,
    }


def test_mnist_models_are_unchanged():
    for overrides in ([], ["experiment=conv"]):
        model = compose(overrides).model
        assert model.encoder.get("in_features", 784) == model.decoder.get("out_features", 784) == 784
        assert model.encoder.get("in_channels", 1) == model.decoder.get("out_channels", 1) == 1
        assert compose(overrides).paths.data_source == "src/aeflow/data/download.py"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.path=???"], "data.path='???': set it to your images folder"),
        (["data.channels=2"], "data.channels=2: allowed: 1 (grey), 3 (RGB)"),
        (["data.resize=pad"], "data.resize='pad': allowed: crop, resize"),
        (["data.image_size=[32,32]"], "data.input_features=784: 1 channel(s) of 32x32 are 1024 inputs"),
        (["data.val_size=0.5", "data.test_size=0.5"], "must leave images for training"),
        (["data.channels=3", "data.input_features=784"], "3 channel(s) of 28x28 are 2352 inputs"),
        (
            ["experiment=conv", "data.image_size=[2,32]", "data.input_features=64"],
            "image H=2 is too small for 2 stride-2 convolutions",
        ),
        (
            ["experiment=conv", "data.image_size=[28,28]", "model.encoder.image_size=[28,32]"],
            "the conv model takes images of its image_size",
        ),
        (["data.files.channels=3"], "data.files="),
    ],
)
def test_bad_folder_settings_are_named(overrides, message):
    with pytest.raises(ConfigError) as err:
        validate(folder_cfg(*overrides))
    assert message in str(err.value)


def test_download_stage_config_check_needs_no_files_list():
    cfg = folder_cfg()
    validate(cfg, sections=("paths", "data.source"))
    assert cfg.paths.data_source == "/images"  # the data stage's dependency: the images folder


def test_one_class_training_keeps_the_whole_test_split(tmp_path):
    write_classes(tmp_path / "src", {"a": 60, "b": 60})
    pack_folder(tmp_path / "src", tmp_path / "out", GREY, workers=1, progress=False)
    dm = module(tmp_path / "out", GREY, batch_size=8, classes=[1])
    assert dm.class_names == ["a", "b"]
    assert set(dm.splits["train"][1].tolist()) == set(dm.splits["val"][1].tolist()) == {1}
    assert set(dm.splits["test"][1].tolist()) == {0, 1}
