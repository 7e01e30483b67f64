"""A LightningDataModule over packed image arrays (aeflow.data.pack), memory-mapped by default.

It serves batches exactly as IDXDataModule does (same shuffling by seed and
epoch, same sharding, same `splits` mapping for evaluation and figures), so a
folder of images runs through the same stages as MNIST. The arrays are opened
with `np.load(mmap_mode="r")`: a batch reads only its rows, through the OS page
cache, and the process's own memory stays bounded however large the data set.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

from aeflow.data.datamodule import Batch, IDXDataModule, TensorBatches
from aeflow.data.folder import SPLITS
from aeflow.data.pack import PackSpec, check_spec, read_manifest, split_files
from aeflow.errors import ConfigError, DataError


class PackedBatches(TensorBatches):
    """TensorBatches over images (N, H, W) or (N, C, H, W): batches are always (B, C, H, W)."""

    def __iter__(self) -> Iterator[Batch]:
        idx = self._indices()
        for start in range(0, len(idx), self.batch_size):
            sel = idx[start : start + self.batch_size]
            images = self.images.index_select(0, sel)  # reads only these rows of a memory map
            if images.dim() == 3:
                images = images.unsqueeze(1)  # (B, 1, H, W)
            yield images.float().div_(255.0), self.labels.index_select(0, sel)


def _tensor(array: np.ndarray) -> torch.Tensor:
    # A read-only memory map cannot be made writable; nothing here writes to it.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)


class PackedDataModule(IDXDataModule):
    """Train/val/test splits of a packed image folder (`data=folder`).

    `splits[split]` is (images uint8 (N, H, W) for grey or (N, C, H, W), labels int64 (N,)),
    labels -1 when the folder has no class subfolders. The packing settings
    (image_size, channels, resize, val_size, test_size, split_seed) must match
    those the data stage packed with; `files` is the same settings as recorded
    for DVC (conf/data/folder.yaml fills it from them).
    """

    def __init__(
        self,
        data_dir: str,
        path: str | None = None,
        image_size: Sequence[int] = (28, 28),
        channels: int = 1,
        resize: str = "crop",
        val_size: float = 0.1,
        test_size: float = 0.1,
        split_seed: int = 0,
        input_features: int | None = None,
        files: Mapping[str, object] | None = None,
        batch_size: int = 256,
        name: str = "folder",
        seed: int = 0,
        on_device: bool | None = None,
        in_memory: bool = False,
    ) -> None:
        pl.LightningDataModule.__init__(self)
        self.spec = PackSpec(tuple(image_size), channels, resize, val_size, test_size, split_seed)
        check_spec(self.spec, input_features, files)
        self.data_dir, self.path = Path(data_dir), path
        self.batch_size, self.val_size, self.split_seed = batch_size, val_size, split_seed
        self.name, self.seed, self.on_device, self.in_memory = name, seed, on_device, in_memory
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.classes: list[str] = []

    @property
    def labelled(self) -> bool:
        """Whether the images have class labels (class subfolders); else label-based metrics do not apply."""
        return bool(self.classes)

    def load_split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(images uint8 (N, H, W) or (N, C, H, W), labels int64 (N,)) of 'train', 'val' or 'test'."""
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

    def _load_splits(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        manifest = read_manifest(self.data_dir)
        if manifest["spec"] != self.spec.as_dict():
            raise DataError(
                f"{self.data_dir} was packed with {manifest['spec']}, but the config asks for "
                f"{self.spec.as_dict()}; re-pack: dvc repro download"
            )
        self.classes = list(manifest["classes"])
        splits = {split: self.load_split(split) for split in SPLITS}
        sizes = {split: len(labels) for split, (_, labels) in splits.items()}
        if sizes["val"] == 0:
            raise DataError(f"{self.data_dir}: the validation split is empty ({sizes}); raise data.val_size")
        if self.batch_size > sizes["train"]:
            raise ConfigError(
                f"data.batch_size={self.batch_size} is larger than the training split "
                f"({sizes['train']} images); use at most {sizes['train']}"
            )
        return splits

    def _batches(self, split: str, shuffle: bool) -> PackedBatches:
        batches = super()._batches(split, shuffle)
        return PackedBatches(
            batches.images,
            batches.labels,
            batches.batch_size,
            shuffle,
            batches.seed,
            batches.rank,
            batches.world_size,
        )
