import gzip
import os
import pickle

import numpy as np
import pytest

from aeflow.data import sources
from aeflow.data.download import download_dataset
from aeflow.data.idx import md5_file, read_idx
from aeflow.errors import DataError
from tests.conftest import FILE_NAMES, make_synthetic_idx

MNIST_FILES = {
    "train_images": {"file": "train-images-idx3-ubyte", "md5": "6bbc9ace898e44ae57da46a324031adb"},
    "train_labels": {"file": "train-labels-idx1-ubyte", "md5": "a25bea736e30d166cdddb491f175f624"},
    "test_images": {"file": "t10k-images-idx3-ubyte", "md5": "2646ac647ad5339dbf082846283269ea"},
    "test_labels": {"file": "t10k-labels-idx1-ubyte", "md5": "27ae3e4e09519cfbb04c329615203637"},
}


def test_verified_files_from_file_mirror(tmp_path):
    mirror = tmp_path / "mirror"
    files = make_synthetic_idx(mirror, gz=True)
    out = tmp_path / "out"
    fetched = download_dataset(out, files, [mirror.as_uri() + "/"])
    assert set(fetched) == set(FILE_NAMES.values())
    for spec in files.values():
        assert md5_file(out / spec["file"]) == spec["md5"]


def test_rerun_with_verified_files_downloads_nothing(tmp_path):
    mirror = tmp_path / "mirror"
    files = make_synthetic_idx(mirror, gz=True)
    out = tmp_path / "out"
    download_dataset(out, files, [mirror.as_uri()])
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    # No source at all: succeeds only because nothing needs fetching.
    assert download_dataset(out, files, []) == {}
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == mtimes


def test_corrupt_local_file_is_refetched(tmp_path):
    mirror = tmp_path / "mirror"
    files = make_synthetic_idx(mirror, gz=True)
    out = tmp_path / "out"
    download_dataset(out, files, [mirror.as_uri()])
    target = out / files["train_images"]["file"]
    data = bytearray(target.read_bytes())
    data[100] ^= 0xFF
    target.write_bytes(bytes(data))
    assert download_dataset(out, files, [mirror.as_uri()]) == {target.name: mirror.as_uri()}
    assert md5_file(target) == files["train_images"]["md5"]


def test_corrupt_and_truncated_mirror_rejected_with_every_source_named(tmp_path):
    good = tmp_path / "good"
    files = make_synthetic_idx(good, gz=True)
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in FILE_NAMES.values():
        raw = gzip.decompress((good / f"{name}.gz").read_bytes())
        (bad / f"{name}.gz").write_bytes(gzip.compress(raw[:-7]))  # truncated
    missing = tmp_path / "missing"
    with pytest.raises(DataError) as err:
        download_dataset(tmp_path / "out", files, [bad.as_uri(), missing.as_uri()])
    msg = str(err.value)
    assert bad.as_uri() in msg and "has MD5" in msg
    assert missing.as_uri() in msg
    assert "data.source.mirrors" in msg
    assert not list((tmp_path / "out").iterdir())  # nothing unverified was written


def test_real_mnist_from_shared_mirror(tmp_path, mnist_mirror):
    out = tmp_path / "mnist"
    download_dataset(out, MNIST_FILES, [mnist_mirror.as_uri()])
    images = read_idx(out / "t10k-images-idx3-ubyte")
    assert images.shape == (10000, 28, 28)
    assert read_idx(out / "train-labels-idx1-ubyte").shape == (60000,)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/aeflow-pwned",))


def test_restricted_unpickler_refuses_code_execution():
    payload = pickle.dumps(_Evil())
    with pytest.raises(pickle.UnpicklingError, match="refusing to unpickle"):
        sources.restricted_loads(payload)


def test_restricted_unpickler_loads_numpy_arrays():
    arrays = (np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1, 2], dtype=np.int64))
    loaded = sources.restricted_loads(pickle.dumps(arrays, protocol=2))
    np.testing.assert_array_equal(loaded[0], arrays[0])


def test_mnist_pickle_rebuilds_exact_pixels():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(5, 28, 28)).astype(np.uint8)
    as_float = (pixels.reshape(5, 784) / 256.0).astype(np.float32)
    labels = np.arange(5, dtype=np.int64)
    pkl = pickle.dumps(
        ((as_float[:3], labels[:3]), (as_float[3:4], labels[3:4]), (as_float[4:], labels[4:])), protocol=2
    )
    idx = sources.mnist_pickle_to_idx(pkl)
    from aeflow.data.idx import decode_idx

    np.testing.assert_array_equal(decode_idx(idx["train-images-idx3-ubyte"]), pixels[:4])
    np.testing.assert_array_equal(decode_idx(idx["t10k-labels-idx1-ubyte"]), [4])


def test_fetch_url_refuses_other_schemes():
    with pytest.raises(ValueError, match="unsupported URL scheme"):
        sources.fetch_url("ftp://example.invalid/x", "x")
