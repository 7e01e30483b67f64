"""The splits of a packed image folder (aeflow.data.pack) as uint8 tensors, without Lightning.

PackedDataModule serves training batches from them; the evaluate and visualize
stages read them directly (`from_config`), as they read MNIST's IDX files
through aeflow.data.splits. Memory-mapped by default: a split's rows are read
from disk (through the OS page cache) only when something indexes them.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aeflow.data.classes import check_classes, keep_classes
from aeflow.data.folder import SPLITS
from aeflow.data.pack import PackSpec, read_manifest, spec_from_config, split_files
from aeflow.data.schema import FOLDER_DATA
from aeflow.errors import DataError

Split = tuple[torch.Tensor, torch.Tensor]  # images uint8 (N, H, W) grey or (N, C, H, W), labels int64 (N,)


def _tensor(array: np.ndarray) -> torch.Tensor:
    # A read-only memory map cannot be made writable; nothing here writes to it.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)


class PackedSplits:
    """The train/val/test splits of a pack in `data_dir`, checked against the settings `spec`.

    `classes` (data.classes) keeps only those labels in train and val (that subset is
    copied into memory); the test split stays whole. `in_memory` reads the arrays instead
    of memory-mapping them. Has the `setup()` and `splits` that evaluation uses of a data module.
    """

    def __init__(
        self,
        data_dir: str | Path,
        spec: PackSpec,
        classes: Sequence[int] | None = None,
        in_memory: bool = False,
    ) -> None:
        self.data_dir, self.spec, self.in_memory = Path(data_dir), spec, in_memory
        self.classes = check_classes(classes)
        self.splits: dict[str, Split] = {}
        self.class_names: list[str] = []  # label i is class_names[i]; empty: unlabeled (labels -1)

    def setup(self, stage: str | None = None) -> None:
        if not self.splits:
            self.splits = self._load()

    @property
    def labelled(self) -> bool:
        """Whether the images have labels (class subfolders); label-based metrics need them."""
        return bool(self.class_names)

    def split(self, name: str) -> Split:
        """One split, read (mapped) on its own: what the visualize stage draws from."""
        self._check_manifest()
        return self._open(name)

    def _check_manifest(self) -> dict:
        manifest = read_manifest(self.data_dir)
        if manifest["spec"] != self.spec.as_dict():
            raise DataError(
                f"{self.data_dir} was packed with {manifest['spec']}, but the config asks for "
                f"{self.spec.as_dict()}; re-pack: dvc repro download"
            )
        self.class_names = list(manifest["classes"])
        return manifest

    def _open(self, split: str) -> Split:
        names = split_files(split)
        images = np.load(self.data_dir / names["images"], mmap_mode=None if self.in_memory else "r")
        labels = np.load(self.data_dir / names["labels"])
        if images.shape[1:] != self.spec.shape or len(labels) != len(images):
            raise DataError(
                f"{self.data_dir / names['images']}: shape {images.shape} with {len(labels)} labels, "
                f"expected (N, {', '.join(map(str, self.spec.shape))}) and N labels; "
                "re-pack: dvc repro -f download"
            )
        tensor = _tensor(images)
        return (tensor[:, 0] if self.spec.channels == 1 else tensor), torch.from_numpy(labels)

    def _load(self) -> dict[str, Split]:
        self._check_manifest()
        splits = {split: self._open(split) for split in SPLITS}
        for split in ("train", "val"):
            splits[split] = keep_classes(splits[split], self.classes, split)
        if len(splits["val"][1]) == 0:
            sizes = {split: len(labels) for split, (_, labels) in splits.items()}
            raise DataError(f"{self.data_dir}: the validation split is empty ({sizes}); raise data.val_size")
        return splits


def from_config(cfg: Any) -> PackedSplits | None:
    """The packed splits of a `data=folder` config (paths.data, data.*); None for other data."""
    data: Mapping[str, Any] = cfg.data
    if data.get("_target_") != FOLDER_DATA:
        return None
    return PackedSplits(
        cfg.paths.data, spec_from_config(data), data.get("classes"), data.get("in_memory", False)
    )
