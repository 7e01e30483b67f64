"""The train/val/test splits of an IDX image dataset as uint8 tensors, without Lightning.

The DataModule serves batches from them; the evaluate and visualize stages read
them directly. Validation is a fixed slice of the training images chosen by
`split_seed`; the official test set is the test split.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from aeflow.data.classes import keep_classes
from aeflow.data.idx import read_idx, verify_file
from aeflow.errors import ConfigError, DataError

log = logging.getLogger(__name__)

Split = tuple[torch.Tensor, torch.Tensor]  # images uint8 (N, H, W), labels int64 (N,)


def _load(data_dir: Path, spec: Mapping[str, str]) -> torch.Tensor:
    path = data_dir / spec["file"]
    # Checksums first: nothing runs on data that did not verify.
    verify_file(path, spec["md5"])
    return torch.from_numpy(read_idx(path).copy())


def load_split(data_dir: str | Path, files: Mapping[str, Mapping[str, str]], split: str) -> Split:
    """Verified (images uint8 (N, H, W), labels int64 (N,)) of the 'train' or 'test' files."""
    images = _load(Path(data_dir), files[f"{split}_images"])
    labels = _load(Path(data_dir), files[f"{split}_labels"]).long()
    if len(images) != len(labels):
        raise DataError(f"{split}: {len(images)} images but {len(labels)} labels")
    return images, labels


def split_train_val(
    images: torch.Tensor, labels: torch.Tensor, val_size: int, split_seed: int
) -> tuple[Split, Split]:
    """(train, val): `val_size` training images picked by `split_seed` are held out, both in file order."""
    n = len(images)
    if not 0 < val_size < n:
        raise ConfigError(f"data.val_size={val_size}: must be between 1 and {n - 1}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(split_seed))
    val_idx, train_idx = perm[:val_size].sort().values, perm[val_size:].sort().values
    return (images[train_idx], labels[train_idx]), (images[val_idx], labels[val_idx])


def load_splits(
    data_dir: str | Path,
    files: Mapping[str, Mapping[str, str]],
    val_size: int,
    split_seed: int,
    name: str = "",
    classes: Sequence[int] | None = None,
) -> dict[str, Split]:
    """{'train', 'val', 'test'}: the training files split by `split_seed`, and the test files.

    `classes` (data.classes) keeps only those labels in train and val; the test split stays whole.
    """
    train, val = split_train_val(*load_split(data_dir, files, "train"), val_size, split_seed)
    splits = {
        "train": keep_classes(train, classes, "train"),
        "val": keep_classes(val, classes, "val"),
        "test": load_split(data_dir, files, "test"),
    }
    log.info("%s: %s", name, {k: len(v[1]) for k, v in splits.items()})
    return splits


def splits_from_config(cfg) -> dict[str, Split]:
    """The splits as the stages that do not train read them, on the CPU: a data=folder pack's
    arrays (aeflow.data.packed_splits) or a data=mvtec one's (aeflow.data.mvtec), else the IDX
    files in `paths.data` split as the DataModule splits them."""
    from aeflow.data import mvtec, packed_splits

    packed = packed_splits.from_config(cfg) or mvtec.from_config(cfg)
    if packed is not None:
        packed.setup()
        return packed.splits
    data = cfg.data
    return load_splits(
        cfg.paths.data,
        data.files,
        int(data.val_size),
        int(data.split_seed),
        str(data.get("name", "")),
        data.get("classes"),
    )
