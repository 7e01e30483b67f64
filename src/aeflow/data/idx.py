"""The IDX file format of MNIST and Fashion-MNIST, and MD5 verification.

IDX: a big-endian header (two zero bytes, a type code, the number of
dimensions, then one uint32 per dimension) followed by the raw array.
Only unsigned bytes (type 0x08) occur in these datasets.
"""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

import numpy as np

from aeflow.errors import DataError

_UBYTE = 0x08


def md5_bytes(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def md5_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def encode_idx(array: np.ndarray) -> bytes:
    """Serialise a uint8 array to IDX bytes."""
    if array.dtype != np.uint8:
        raise ValueError(f"IDX writer supports uint8 only, got {array.dtype}")
    header = struct.pack(">BBBB", 0, 0, _UBYTE, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array).tobytes()


def decode_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Parse IDX bytes into a uint8 array, checking the header against the size."""
    if len(data) < 4:
        raise DataError(f"{name}: {len(data)} bytes is too short for an IDX header")
    zero0, zero1, dtype, ndim = struct.unpack(">BBBB", data[:4])
    if zero0 or zero1 or dtype != _UBYTE or not 1 <= ndim <= 4:
        raise DataError(f"{name}: not an unsigned-byte IDX file (bad magic {data[:4].hex()})")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise DataError(f"{name}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", data[4:header_len])
    expected = header_len + int(np.prod(shape))
    if len(data) != expected:
        raise DataError(
            f"{name}: IDX header promises {expected} bytes for shape {shape}, "
            f"file has {len(data)} (truncated or padded)"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header_len).reshape(shape)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    path = Path(path)
    return decode_idx(path.read_bytes(), name=str(path))


def verify_file(path: str | os.PathLike, md5: str) -> None:
    """Raise DataError unless `path` exists and its MD5 is `md5`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} is missing. Run the download stage: `dvc repro download`.")
    actual = md5_file(path)
    if actual != md5:
        raise DataError(
            f"{path} is corrupt: MD5 {actual}, expected {md5}. Delete it and run "
            "`dvc repro download` to fetch a verified copy."
        )
