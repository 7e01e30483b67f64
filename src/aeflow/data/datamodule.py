"""A LightningDataModule over IDX files, serving whole batches from uint8 tensors.

Each split is one uint8 tensor (60k x 28 x 28 is 47 MB); a batch is one
index-select plus one float conversion, with no per-sample Dataset calls, PIL
or collation. That keeps data wait a small share of a step on the CPU, and on
a GPU the tensors can live in device memory so batches never cross the bus.

The loaders are plain `torch.utils.data.DataLoader`s with `batch_size=None`:
their sampler yields each batch's indices and the dataset returns the whole
batch for them (PyTorch's documented way to load in batches).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from aeflow.data.classes import check_classes
from aeflow.data.splits import load_split, load_splits
from aeflow.errors import ConfigError

Batch = tuple[torch.Tensor, torch.Tensor]  # images (B, C, H, W) float in [0, 1], labels (B,)


class TensorBatches(Dataset):
    """Images uint8 (N, H, W) or (N, C, H, W) and labels (N,); item `indices` is a whole batch.

    The images may be a memory map (aeflow.data.packed): an item reads only its rows.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, indices: torch.Tensor) -> Batch:
        images = self.images.index_select(0, indices)
        if images.dim() == 3:
            images = images.unsqueeze(1)  # (B, 1, H, W)
        return images.float().div_(255.0), self.labels.index_select(0, indices)


class BatchIndices(DistributedSampler):
    """The index tensors of one rank's batches, each epoch in an order seeded by (seed, epoch).

    An epoch's order does not depend on how many epochs ran before in this
    process: a run resumed from a checkpoint sees the same batches as an
    uninterrupted one. Lightning calls `set_epoch` before each training epoch,
    also after a resume. Each of `world_size` data-parallel ranks gets an equal
    shard (the remainder is dropped), so every rank runs the same number of
    steps; being a `DistributedSampler`, it is the one Lightning keeps under DDP
    instead of adding its own.
    """

    def __init__(
        self,
        dataset: TensorBatches,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        super().__init__(dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed)
        self.n, self.batch_size = len(dataset), batch_size
        self.device = dataset.images.device

    def _indices(self) -> torch.Tensor:
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            idx = torch.randperm(self.n, generator=gen)
        else:
            idx = torch.arange(self.n)
        per_rank = self.n // self.num_replicas
        return idx[self.rank * per_rank : (self.rank + 1) * per_rank].to(self.device)

    def __len__(self) -> int:
        return -(-(self.n // self.num_replicas) // self.batch_size)

    def __iter__(self) -> Iterator[torch.Tensor]:
        # A generator: the order is drawn at the first batch, not when the DataLoader's iterator is
        # made. Lightning makes a resumed run's first iterator before it calls `set_epoch`, so an
        # eager order would replay epoch 0's batches in the resumed epoch.
        yield from self._indices().split(self.batch_size)


def _whole_batch(batch: Batch) -> Batch:
    """The dataset's batch as it is (the default would turn the tuple into a list)."""
    return batch


def batch_loader(
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
) -> DataLoader:
    """A DataLoader of (images (B, C, H, W) float in [0, 1], labels (B,)) batches; see BatchIndices."""
    dataset = TensorBatches(images, labels)
    sampler = BatchIndices(dataset, batch_size, shuffle, seed, rank, world_size)
    return DataLoader(dataset, sampler=sampler, batch_size=None, collate_fn=_whole_batch)


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

    def _batches(self, split: str, shuffle: bool) -> DataLoader:
        images, labels = self.splits[split]
        rank, world = (0, 1)
        if self.trainer is not None and split == "train":
            rank, world = self.trainer.global_rank, self.trainer.world_size
        return batch_loader(images, labels, self.batch_size, shuffle, self.seed, rank, world)

    def train_dataloader(self) -> DataLoader:
        return self._batches("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._batches("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._batches("test", shuffle=False)
