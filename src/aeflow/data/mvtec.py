"""One category of an MVTec AD-layout folder, packed like `data=folder` plus the test masks.

`data.path` is the category's folder (e.g. `mvtec_anomaly_detection/bottle`):

    <path>/train/good/*.png                       good images only: training and validation
    <path>/test/good/*.png                        good test images (their mask is all 0)
    <path>/test/<defect>/*.png                    defective test images, one folder per type
    <path>/ground_truth/<defect>/<stem>_mask.png  each defective image's mask (non-zero: defect)

`pack_mvtec` writes the arrays `aeflow.data.pack` writes for a folder (the same
decoding, checks and atomic replacement, read back by PackedSplits) and
`test_masks.npy`, uint8 (N, H, W) in {0, 1}, row i the mask of test image i.
Labels: 0 for `good`, 1.. for the defect types in sorted order (the manifest's
`classes`). Training images are split into train and val by a hash of their
path and `split_seed` (as a folder without split folders is); the test split
is the `test/` folder. Masks go through the same resize or crop as their image,
with nearest-neighbour sampling so that they stay binary.

No Lightning here: the download stage packs, and the evaluate stage reads the
masks, without it (aeflow.data.mvtec_datamodule serves the training batches).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

from aeflow.data import pack
from aeflow.data.folder import IMAGE_SUFFIXES, FolderIndex, hashed_split
from aeflow.data.pack import PackSpec
from aeflow.data.packed_splits import PackedSplits, _tensor
from aeflow.data.schema import MVTEC_DATA
from aeflow.errors import ConfigError, DataError
from aeflow.io import atomic_path

log = logging.getLogger(__name__)

GOOD = "good"
MASKS_FILE = "test_masks.npy"
MASK_SUFFIX = "_mask.png"
KIND = "mvtec"


@dataclass
class MVTecIndex(FolderIndex):
    """A FolderIndex whose test images each have a mask file (None for good images)."""

    masks: list[str | None] = field(default_factory=list)


def _images(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    )


def _type_folders(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def scan_mvtec(root: str | Path, val_size: float = 0.1, split_seed: int = 0) -> MVTecIndex:
    """Index one MVTec-layout category folder (see the module docstring); every missing mask named."""
    root = Path(root)
    for need in ("train/good", "test"):
        if not (root / need).is_dir():
            raise DataError(
                f"data.path={str(root)!r}: no {need}/ folder; point data.path at one category's folder, "
                "the one holding train/good/, test/ and ground_truth/"
            )
    pack.check_fractions(val_size, 0)
    extra = [name for name in _type_folders(root / "train") if name != GOOD]
    if extra:
        log.warning("%s: training uses train/good only; left out train/%s", root, ", train/".join(extra))
    defects = [name for name in _type_folders(root / "test") if name != GOOD]
    index = MVTecIndex(classes=[GOOD, *defects], split_folders=["test"])
    for path in _images(root / "train" / GOOD):
        rel = path.relative_to(root).as_posix()
        split = hashed_split(path.name, val_size, 0, split_seed)
        index.files[split].append(rel)
        index.labels[split].append(0)
    missing = []
    for label, kind in enumerate(index.classes):
        folder = root / "test" / kind
        for path in _images(folder) if folder.is_dir() else []:
            mask = None if kind == GOOD else root / "ground_truth" / kind / f"{path.stem}{MASK_SUFFIX}"
            if mask is not None and not mask.is_file():
                missing.append(f"{path.relative_to(root)}: no mask {mask.relative_to(root)}")
            index.files["test"].append(path.relative_to(root).as_posix())
            index.labels["test"].append(label)
            index.masks.append(None if mask is None else mask.relative_to(root).as_posix())
    if missing:
        raise DataError(
            f"{len(missing)} defective test image(s) in {root} without a mask; add each mask "
            "(ground_truth/<defect>/<name>_mask.png, white where the defect is) or remove the image:\n  "
            + "\n  ".join(missing)
        )
    fixes = {
        "train": "add images to train/good or lower data.val_size",
        "val": "raise data.val_size",
        "test": "add images to test/",
    }
    for split, fix in fixes.items():
        if not index.files[split]:
            raise DataError(f"{root}: the {split} split has no images ({index.counts()}); {fix}")
    log.info("images per split: %s; defect types: %s", index.counts(), defects or "none")
    return index


def _upright_size(path: Path) -> tuple[int, int]:
    """(width, height) of the image as packed: after its EXIF orientation (a header read only)."""
    with Image.open(path) as image:
        return ImageOps.exif_transpose(image).size if image.getexif().get(0x0112, 1) > 4 else image.size


def decode_mask(mask_path: Path, image_path: Path, spec: PackSpec) -> np.ndarray:
    """uint8 (H, W) in {0, 1} of the mask, fitted as its image is; BadImage naming both if sizes differ."""
    try:
        with Image.open(mask_path) as mask:
            mask.load()
            binary = Image.fromarray(np.asarray(mask.convert("L")) > 0)  # mode "1"
    except Exception as exc:  # noqa: BLE001 (Pillow raises OSError, SyntaxError, ...)
        raise pack.BadImage(f"unreadable mask ({type(exc).__name__}: {exc})") from None
    image_size = _upright_size(image_path)
    if binary.size != image_size:
        raise pack.BadImage(
            f"mask is {binary.width}x{binary.height} but its image {image_path.name} is "
            f"{image_size[0]}x{image_size[1]} (width x height); masks must have their image's size"
        )
    # Pillow resizes a mode "1" image with nearest-neighbour sampling whatever filter is asked
    # for, so the mask gets exactly the image's crop or resize geometry and stays binary.
    fitted = pack._fit(binary, *spec.image_size, spec.resize)
    return np.asarray(fitted, dtype=np.uint8)


def _write_masks(root: Path, index: MVTecIndex, spec: PackSpec, tmp: Path) -> list[str]:
    """The test masks into `tmp` (zeros for good images); '<file>: <reason>' for each bad mask."""
    masks = np.lib.format.open_memmap(
        tmp, mode="w+", dtype=np.uint8, shape=(len(index.masks), *spec.image_size)
    )
    bad = []
    for i, (image, mask) in enumerate(zip(index.files["test"], index.masks, strict=True)):
        if mask is None:
            masks[i] = 0
            continue
        try:
            masks[i] = decode_mask(root / mask, root / image, spec)
        except (pack.BadImage, OSError) as exc:
            bad.append(f"{mask}: {exc}")
    masks.flush()
    del masks
    return bad


def pack_mvtec(
    source: str | Path,
    out_dir: str | Path,
    spec: PackSpec,
    workers: int | None = None,
    progress: bool = True,
) -> dict:
    """Pack one MVTec-layout category into `out_dir` (see the module docstring); return the manifest.

    Nothing is replaced unless every image and mask is good; the error lists every bad file.
    """
    source, out_dir = Path(source), Path(out_dir)
    index = scan_mvtec(source, spec.val_size, spec.split_seed)
    return pack.write_pack(
        source,
        out_dir,
        index,
        spec,
        workers,
        progress,
        extra=lambda stack: _write_masks(
            source, index, spec, stack.enter_context(atomic_path(out_dir / MASKS_FILE))
        ),
        manifest_extra={"kind": KIND, "masks": MASKS_FILE},
        noun="image or mask",
    )


def spec_from_config(data: Mapping[str, Any]) -> PackSpec:
    """The PackSpec of a `data=mvtec` config node (conf/data/mvtec.yaml)."""
    check_test_size(data.get("test_size", 0))
    return pack.spec_from_config({"test_size": 0, **data})


def check_test_size(test_size: float) -> None:
    """The test split of an MVTec-layout category is its test/ folder: none is drawn from train/."""
    if test_size:
        raise ConfigError(
            f"data.test_size={test_size!r}: with data=mvtec the test split is the test/ folder; set 0"
        )


class MVTecSplits(PackedSplits):
    """PackedSplits of an MVTec pack, with each test image's mask (`test_masks`)."""

    def _check_manifest(self) -> dict:
        manifest = super()._check_manifest()
        if manifest.get("kind") != KIND:
            raise DataError(
                f"{self.data_dir} holds a packed image folder, not an MVTec-layout category; "
                "re-pack with data=mvtec: dvc repro -f download"
            )
        return manifest

    @property
    def defect_types(self) -> list[str]:
        """Test label i is defect_types[i]; label 0 is `good`."""
        return self.class_names

    def test_masks(self) -> torch.Tensor:
        """uint8 (N, H, W) in {0, 1}, memory-mapped unless `in_memory`: row i is test image i's mask."""
        self._check_manifest()
        masks = np.load(self.data_dir / MASKS_FILE, mmap_mode=None if self.in_memory else "r")
        count = len(np.load(self.data_dir / pack.split_files("test")["labels"]))
        if masks.shape != (count, *self.spec.image_size):
            raise DataError(
                f"{self.data_dir / MASKS_FILE}: shape {masks.shape}, expected ({count}, "
                f"{', '.join(map(str, self.spec.image_size))}); re-pack: dvc repro -f download"
            )
        return _tensor(masks)


def from_config(cfg: Any) -> MVTecSplits | None:
    """The packed splits and masks of a `data=mvtec` config (paths.data, data.*); None for other data."""
    data: Mapping[str, Any] = cfg.data
    if data.get("_target_") != MVTEC_DATA:
        return None
    return MVTecSplits(cfg.paths.data, spec_from_config(data), None, data.get("in_memory", False))


def pack_from_config(cfg: Any, workers: int | None = None) -> dict | None:
    """What the download stage does for `data=mvtec`: pack `data.path` into `paths.data`; None otherwise."""
    if cfg.data.get("_target_") != MVTEC_DATA:
        return None
    return pack_mvtec(cfg.data.path, cfg.paths.data, spec_from_config(cfg.data), workers)
