"""A folder of PNG/JPEG images as train/val/test file lists with optional class labels.

Layouts (`root` is the folder the user points `data.path` at):
- `root/<class>/**/*.png`: one subfolder per class; the folder name is the label.
- `root/**.png` with no class subfolders: unlabeled (every label is -1).
- `root/{train,val,test}/...`: the split is given by the folder; each split
  folder holds either layout above. A split folder that is absent is drawn
  from `train/` by hash, as below.

Without split folders, each file's split comes from a hash of its path relative
to its split root and `split_seed`: adding or removing files never moves any
other file to another split, so a data set that grows keeps its test set.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aeflow.data.schema import is_packed
from aeflow.errors import ConfigError, DataError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
SPLITS = ("train", "val", "test")
UNLABELED = -1


def has_labels(labels: Any) -> bool:
    """Whether images with these labels (a tensor or array) are labelled: a folder without class
    subfolders gives every image UNLABELED; MNIST-family data is always labelled."""
    return len(labels) > 0 and int(labels.min()) != UNLABELED


@dataclass
class FolderIndex:
    """The files of each split (relative to the scanned root, sorted) and their labels."""

    files: dict[str, list[str]] = field(default_factory=lambda: {s: [] for s in SPLITS})
    labels: dict[str, list[int]] = field(default_factory=lambda: {s: [] for s in SPLITS})
    classes: list[str] = field(default_factory=list)  # label i is classes[i]; empty: unlabeled
    split_folders: list[str] = field(default_factory=list)  # the splits given by a folder

    def counts(self) -> dict[str, int]:
        return {split: len(names) for split, names in self.files.items()}


def hash_fraction(relpath: str, split_seed: int) -> float:
    """A number in [0, 1) fixed by the file's relative path and the seed (sha256, not Python's hash)."""
    digest = hashlib.sha256(f"{split_seed}/{relpath}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def hashed_split(relpath: str, val_size: float, test_size: float, split_seed: int) -> str:
    """'test' for a `test_size` share of paths, 'val' for a `val_size` share, else 'train'."""
    u = hash_fraction(relpath, split_seed)
    return "test" if u < test_size else "val" if u < test_size + val_size else "train"


def check_fractions(val_size: float, test_size: float) -> None:
    for key, value in (("val_size", val_size), ("test_size", test_size)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise ConfigError(
                f"data.{key}={value!r}: a folder's split is a fraction of the images, in [0, 1)"
            )
    if val_size + test_size >= 1:
        raise ConfigError(
            f"data.val_size + data.test_size = {val_size + test_size}: must leave images for training (< 1)"
        )


def _image_files(folder: Path) -> tuple[list[str], list[str]]:
    """(images, other files) below `folder` as paths relative to it ('a/b.png'), hidden files and
    folders left out. Strings, not Path objects: a Path costs several times its string, and a
    folder may hold millions of images."""
    images, others = [], []
    for top, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]  # symlinked folders are not followed
        base = Path(top).relative_to(folder).as_posix()
        prefix = "" if base == "." else f"{base}/"
        for name in names:
            if name.startswith(".") or not os.path.isfile(os.path.join(top, name)):
                continue
            (images if os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES else others).append(prefix + name)
    return sorted(images), sorted(others)


def _class_of(rel: str) -> str | None:
    head, sep, _ = rel.partition("/")
    return head if sep else None


def _check_layout(split_root: Path, images: list[str]) -> None:
    """A folder mixing both layouts (images directly in it and in class subfolders) is an error."""
    loose = [rel for rel in images if _class_of(rel) is None]
    if loose and len(loose) != len(images):
        raise DataError(
            f"{split_root}: {len(loose)} image(s) lie directly in the folder (e.g. {loose[0]}) and "
            f"{len(images) - len(loose)} in class subfolders; put every image in a class subfolder "
            "(labelled) or none (unlabeled)"
        )


def scan_folder(
    root: str | Path, val_size: float = 0.1, test_size: float = 0.1, split_seed: int = 0
) -> FolderIndex:
    """Index the images under `root` by split and class (see the module docstring for layouts)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data.path={str(root)!r}: not a folder; point it at your images folder")
    check_fractions(val_size, test_size)
    top = {p.name for p in root.iterdir() if not p.name.startswith(".")}
    given = [s for s in SPLITS if (root / s).is_dir()]
    if given and "train" in given and top <= set(SPLITS):
        roots = {s: root / s for s in given}
    else:
        given, roots = [], {"train": root}
    # Each split's files come from one root (a split folder, or train's by hash), in sorted order;
    # the index is built in place: no per-image tuples, which cost more than the names.
    scanned = {split: _image_files(split_root) for split, split_root in roots.items()}
    prefixes = {split: _prefix(root, split_root) for split, split_root in roots.items()}
    others = [prefixes[split] + rel for split, (_, extra) in scanned.items() for rel in extra]
    if others:
        log.warning(
            "%s: %d file(s) that are not %s images left out, e.g. %s",
            root,
            len(others),
            "/".join(IMAGE_SUFFIXES),
            others[0],
        )
    if not any(images for images, _ in scanned.values()):
        raise DataError(f"data.path={str(root)!r}: no {'/'.join(IMAGE_SUFFIXES)} images found")
    named: set[str | None] = set()
    for split, (images, _) in scanned.items():
        _check_layout(roots[split], images)
        named |= {_class_of(rel) for rel in images}
    if None in named and len(named) > 1:
        raise DataError("some splits have class subfolders and others not; use one layout in every split")
    classes = sorted(c for c in named if c is not None)
    number = {c: i for i, c in enumerate(classes)}
    index = FolderIndex(classes=classes, split_folders=given)
    for split, (images, _) in scanned.items():
        prefix = prefixes[split]
        for rel in images:
            drawn = split
            if split == "train":
                drawn = hashed_split(
                    rel,
                    0 if "val" in given else val_size,
                    0 if "test" in given else test_size,
                    split_seed,
                )
            cls = _class_of(rel)
            index.files[drawn].append(prefix + rel)
            index.labels[drawn].append(number[cls] if cls is not None else UNLABELED)
        images.clear()  # the names now live in the index
    fix = {"train": "lower data.val_size and data.test_size", "test": "raise data.test_size"}
    for split, advice in fix.items():
        if not index.files[split]:
            raise DataError(f"the {split} split has no images ({index.counts()}); add images or {advice}")
    log.info("images per split: %s; classes: %s", index.counts(), classes or "none (unlabeled)")
    return index


def _prefix(root: Path, split_root: Path) -> str:
    """What turns a path relative to `split_root` into one relative to `root` ('' or 'train/')."""
    return "" if split_root == root else f"{split_root.relative_to(root).as_posix()}/"


def describe(data: Mapping[str, Any]) -> str:
    """A `data:` config section in words, for the report and the MLflow run's description: image
    size and channels for your own images (data=folder or data=mvtec), the data set's name otherwise.

    Not the folder (data.path): where the images were is the download stage's input, not a setting
    of the stages that describe the run; the data's digest says which images they were.
    """
    if not is_packed(data):
        return str(data.get("name", "?"))
    height, width = data.get("image_size", (28, 28))
    channels = int(data.get("channels", 1))
    colour = "RGB" if channels == 3 else "grey"
    return f"your images, {height}x{width} {colour} ({channels} channel(s))"
