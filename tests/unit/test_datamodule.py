import pytest
import torch

from aeflow.data.datamodule import IDXDataModule, TensorBatches
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
    batches = list(dm.train_dataloader())
    assert len(batches) == len(dm.train_dataloader()) == 7
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
    a = TensorBatches(images, labels, 10, shuffle=True, seed=3)
    b = TensorBatches(images, labels, 10, shuffle=True, seed=3)
    first = [y.tolist() for _, y in a]
    a.set_epoch(1)
    second = [y.tolist() for _, y in a]
    b.set_epoch(1)
    assert second == [y.tolist() for _, y in b] and first != second
    assert sorted(sum(first, [])) == list(range(50))


def test_ranks_get_disjoint_equal_shards():
    images, labels = torch.zeros(10, 2, 2, dtype=torch.uint8), torch.arange(10)
    shards = [
        sum((y.tolist() for _, y in TensorBatches(images, labels, 2, True, 0, r, 2)), []) for r in (0, 1)
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
