import pytest
import torch
from torch.utils.data import DataLoader

from aeflow.data.datamodule import IDXDataModule, batch_loader
from aeflow.errors import ConfigError, DataError


def _dm(folder, files, **kw):
    args = dict(batch_size=16, val_size=20, split_seed=0)
    args.update(kw)
    return IDXDataModule(data_dir=str(folder), files=files, **args)


def test_splits_batches_and_range(synthetic_data):
    folder, files = synthetic_data
    dm = _dm(folder, files)
    dm.setup("fit")
    assert {k: len(v[1]) for k, v in dm.splits.items()} == {"train": 100, "val": 20, "test": 40}
    assert dm.splits["train"][0].dtype == torch.uint8
    loader = dm.train_dataloader()
    assert isinstance(loader, DataLoader)
    batches = list(loader)
    assert len(batches) == len(loader) == 7
    x, y = batches[0]
    assert x.shape == (16, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() == 1.0
    assert sum(len(b[1]) for b in batches) == 100


def test_validation_slice_is_fixed_by_seed_and_disjoint(synthetic_data):
    folder, files = synthetic_data
    a, b, c = _dm(folder, files), _dm(folder, files), _dm(folder, files, split_seed=1)
    for dm in (a, b, c):
        dm.setup()
    assert torch.equal(a.splits["val"][0], b.splits["val"][0])
    assert not torch.equal(a.splits["val"][0], c.splits["val"][0])
    train_rows = {bytes(r.numpy()) for r in a.splits["train"][0]}
    assert not train_rows & {bytes(r.numpy()) for r in a.splits["val"][0]}


def test_shuffle_depends_on_seed_and_epoch_only():
    images = torch.arange(50, dtype=torch.uint8).view(50, 1, 1).expand(50, 2, 2).contiguous()
    labels = torch.arange(50)
    a = batch_loader(images, labels, 10, shuffle=True, seed=3)
    b = batch_loader(images, labels, 10, shuffle=True, seed=3)
    first = [y.tolist() for _, y in a]
    a.sampler.set_epoch(1)  # what Lightning calls before each training epoch
    second = [y.tolist() for _, y in a]
    b.sampler.set_epoch(1)
    assert second == [y.tolist() for _, y in b] and first != second
    assert sorted(sum(first, [])) == list(range(50))


def test_ranks_get_disjoint_equal_shards():
    images, labels = torch.zeros(10, 2, 2, dtype=torch.uint8), torch.arange(10)
    shards = [
        sum((y.tolist() for _, y in batch_loader(images, labels, 2, True, 0, r, 2)), []) for r in (0, 1)
    ]
    assert len(shards[0]) == len(shards[1]) == 5 and not set(shards[0]) & set(shards[1])


def test_batch_larger_than_training_split_is_refused(synthetic_data):
    folder, files = synthetic_data
    with pytest.raises(ConfigError, match="data.batch_size=500.*at most 100"):
        _dm(folder, files, batch_size=500).setup()


def test_corrupt_file_refused_before_training(synthetic_data):
    folder, files = synthetic_data
    path = folder / files["test_labels"]["file"]
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte is corrupt"):
        _dm(folder, files).setup()


def test_trainer_shuffles_each_epoch_with_the_modules_sampler(synthetic_data):
    """A real Trainer keeps the loader's sampler and sets its epoch: each epoch's order is the
    one `batch_loader` gives for that epoch."""
    import pytorch_lightning as pl

    folder, files = synthetic_data
    dm = _dm(folder, files)
    dm.setup("fit")
    images, labels = dm.splits["train"]

    class Record(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(1, 1)
            self.seen: list[list[int]] = []

        def on_train_epoch_start(self) -> None:
            self.seen.append([])

        def training_step(self, batch, batch_idx):
            self.seen[-1] += batch[1].tolist()
            return self.layer(batch[0].mean().view(1, 1)).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

    model = Record()
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(model, datamodule=dm)
    for epoch in (0, 1):
        expected = batch_loader(images, labels, 16, True, 0)
        expected.sampler.set_epoch(epoch)
        assert model.seen[epoch] == sum((y.tolist() for _, y in expected), [])
    assert model.seen[0] != model.seen[1]


def test_an_epoch_s_order_is_drawn_at_its_first_batch_not_when_the_iterator_is_made():
    # Lightning makes a resumed run's first iterator before it calls set_epoch (fit_loop.setup_data).
    from aeflow.data.datamodule import BatchIndices, TensorBatches

    data = TensorBatches(torch.zeros(50, 2, 2, dtype=torch.uint8), torch.zeros(50, dtype=torch.long))
    sampler = BatchIndices(data, batch_size=8, shuffle=True, seed=3)
    early = iter(sampler)
    sampler.set_epoch(1)
    fresh = BatchIndices(data, batch_size=8, shuffle=True, seed=3)
    fresh.set_epoch(1)
    assert [b.tolist() for b in early] == [b.tolist() for b in fresh]
    sampler.set_epoch(0)
    assert [b.tolist() for b in sampler] != [b.tolist() for b in fresh]
