"""A LightningDataModule over IDX files, serving whole batches from uint8 tensors.

Each split is one uint8 tensor (60k x 28 x 28 is 47 MB); a batch is one
index-select plus one float conversion, with no per-sample Dataset calls, PIL
or collation. That keeps data wait a small share of a step on the CPU, and on
a GPU the tensors can live in device memory so batches never cross the bus.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import pytorch_lightning as pl
import torch

from aeflow.data.classes import check_classes
from aeflow.data.splits import load_split, load_splits
from aeflow.errors import ConfigError

Batch = tuple[torch.Tensor, torch.Tensor]  # images (B, 1, H, W) float in [0, 1], labels (B,)


class TensorBatches:
    """An iterable of (images, labels) batches over in-memory uint8 tensors.

    Shuffling uses a permutation seeded by (seed, epoch), so an epoch's order
    does not depend on how many epochs ran before in this process: a run
    resumed from a checkpoint sees the same batches as an uninterrupted one.
    `rank`/`world_size` give each data-parallel process its own shard.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    # Lightning calls `dataloader.sampler.set_epoch(epoch)` before each training
    # epoch (also after a resume); exposing ourselves as the sampler hooks into that.
    batch_sampler = None  # DataLoader attribute Lightning inspects; batching is ours

    @property
    def sampler(self) -> TensorBatches:
        return self

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> torch.Tensor:
        n = len(self.labels)
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            idx = torch.randperm(n, generator=gen)
        else:
            idx = torch.arange(n)
        # Equal shards (drop the remainder) so every rank runs the same number of steps.
        per_rank = n // self.world_size
        return idx[self.rank * per_rank : (self.rank + 1) * per_rank].to(self.images.device)

    def __len__(self) -> int:
        per_rank = len(self.labels) // self.world_size
        return -(-per_rank // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        idx = self._indices()
        for start in range(0, len(idx), self.batch_size):
            sel = idx[start : start + self.batch_size]
            images = self.images.index_select(0, sel).unsqueeze(1)  # (B, 1, H, W) uint8
            yield images.float().div_(255.0), self.labels.index_select(0, sel)


class IDXDataModule(pl.LightningDataModule):
    """Train/val/test splits of an IDX image dataset (MNIST, Fashion-MNIST).

    Validation is a fixed slice of the training images chosen by `split_seed`;
    the official test set is served only by `test_dataloader`.
    """

    def __init__(
        self,
        data_dir: str,
        files: Mapping[str, Mapping[str, str]],
        batch_size: int = 256,
        val_size: int = 5000,
        split_seed: int = 0,
        name: str = "mnist",
        seed: int = 0,
        on_device: bool | None = None,
        classes: list[int] | None = None,
    ) -> None:
        super().__init__()
        self.data_dir = Path(data_dir)
        self.files = {k: dict(v) for k, v in files.items()}
        self.batch_size, self.val_size, self.split_seed = batch_size, val_size, split_seed
        self.name, self.seed, self.on_device = name, seed, on_device
        # Train and validate on these labels only (one-class training); the test split stays whole.
        self.classes = check_classes(classes)
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def load_split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Verified (images uint8 (N, H, W), labels int64 (N,)) of 'train' or 'test'."""
        return load_split(self.data_dir, self.files, split)

    def setup(self, stage: str | None = None) -> None:
        if not self.splits:
            self.splits = self._load_splits()
        if self.trainer is not None:
            device = self.trainer.strategy.root_device
            if self.keep_on_device(device):
                self.splits = {k: (x.to(device), y.to(device)) for k, (x, y) in self.splits.items()}

    def keep_on_device(self, device: torch.device) -> bool:
        """Whether the splits live on the trainer's `device`: `on_device`, or if None, any non-CPU device.

        MNIST's splits as uint8 are 55 MB, so on a GPU the whole dataset fits in
        device memory and each batch is sliced and converted there: no copy per
        step, no host-side work. `data.on_device=false` serves batches from host
        memory instead (Lightning then copies each batch to the device).
        """
        return device.type != "cpu" if self.on_device is None else bool(self.on_device)

    def _load_splits(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        splits = load_splits(
            self.data_dir, self.files, self.val_size, self.split_seed, self.name, self.classes
        )
        n_train = len(splits["train"][1])
        if self.batch_size > n_train:
            raise ConfigError(
                f"data.batch_size={self.batch_size} is larger than the training split "
                f"({n_train} images); use at most {n_train}"
            )
        return splits

    def _batches(self, split: str, shuffle: bool) -> TensorBatches:
        images, labels = self.splits[split]
        rank, world = (0, 1)
        if self.trainer is not None and split == "train":
            rank, world = self.trainer.global_rank, self.trainer.world_size
        return TensorBatches(images, labels, self.batch_size, shuffle, self.seed, rank, world)

    def train_dataloader(self) -> TensorBatches:
        return self._batches("train", shuffle=True)

    def val_dataloader(self) -> TensorBatches:
        return self._batches("val", shuffle=False)

    def test_dataloader(self) -> TensorBatches:
        return self._batches("test", shuffle=False)
