"""A LightningDataModule over packed image arrays (aeflow.data.pack), memory-mapped by default.

It serves batches exactly as IDXDataModule does (same shuffling by seed and
epoch, same sharding, same `splits` mapping for evaluation and figures), so a
folder of images runs through the same stages as MNIST. The arrays are opened
with `np.load(mmap_mode="r")`: a batch reads only its rows, through the OS page
cache, and the process's own memory stays bounded however large the data set.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import pytorch_lightning as pl
import torch

from aeflow.data.datamodule import IDXDataModule
from aeflow.data.pack import PackSpec, check_spec
from aeflow.data.packed_splits import PackedSplits

log = logging.getLogger(__name__)


class PackedDataModule(IDXDataModule):
    """Train/val/test splits of a packed image folder (`data=folder`).

    `splits[split]` is (images uint8 (N, H, W) for grey or (N, C, H, W), labels int64 (N,)),
    labels -1 when the folder has no class subfolders (`class_names` is then empty).
    The packing settings (image_size, channels, resize, val_size, test_size,
    split_seed) must match those the data stage packed with; `files` is the same
    settings as recorded for DVC (conf/data/folder.yaml fills it from them).
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
        classes: list[int] | None = None,
    ) -> None:
        pl.LightningDataModule.__init__(self)
        spec = PackSpec(tuple(image_size), channels, resize, val_size, test_size, split_seed)
        check_spec(spec, input_features, files)
        # Train and validate on `classes` only (one-class training); the test split stays whole.
        self.packed = PackedSplits(data_dir, spec, classes, in_memory)
        self.data_dir, self.path, self.classes = self.packed.data_dir, path, self.packed.classes
        self.batch_size, self.val_size, self.split_seed = batch_size, val_size, split_seed
        self.name, self.seed, self.on_device = name, seed, on_device
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def class_names(self) -> list[str]:
        """Label i is class_names[i]; empty for an unlabeled folder (label-based metrics do not apply)."""
        return self.packed.class_names

    @property
    def labelled(self) -> bool:
        return self.packed.labelled

    def load_split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(images uint8 (N, H, W) or (N, C, H, W), labels int64 (N,)) of 'train', 'val' or 'test'."""
        return self.packed.split(split)

    def _load_splits(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        self.packed.setup()
        n_train = len(self.packed.splits["train"][1])
        if self.batch_size > n_train:
            # A small folder is a normal first try: train on it whole rather than refuse.
            log.warning(
                "data.batch_size=%d is larger than the training split (%d images): batches of %d",
                self.batch_size,
                n_train,
                n_train,
            )
            self.batch_size = n_train
        return self.packed.splits
