import numpy as np
import pytest

from aeflow.data.idx import decode_idx, encode_idx, md5_bytes, verify_file
from aeflow.errors import DataError


def test_roundtrip_and_header():
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    data = encode_idx(array)
    assert data[:4] == bytes([0, 0, 8, 3])
    assert int.from_bytes(data[4:8], "big") == 2
    np.testing.assert_array_equal(decode_idx(data), array)


def test_truncated_file_rejected():
    data = encode_idx(np.zeros((5, 28, 28), dtype=np.uint8))
    with pytest.raises(DataError, match="truncated"):
        decode_idx(data[:-10], "x")


def test_bad_magic_rejected():
    with pytest.raises(DataError, match="bad magic"):
        decode_idx(b"\x01\x02\x08\x01" + b"\x00" * 8, "x")


def test_verify_file_names_corrupt_file(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    verify_file(path, md5_bytes(b"abc"))
    path.write_bytes(b"abd")
    with pytest.raises(DataError, match="corrupt.*dvc repro download"):
        verify_file(path, md5_bytes(b"abc"))
    with pytest.raises(DataError, match="missing"):
        verify_file(tmp_path / "nope", "0" * 32)
