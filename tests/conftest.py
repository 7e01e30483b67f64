"""Shared fixtures: the real composed config, tiny synthetic IDX data, the real MNIST mirror."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from aeflow.config.params import compose
from aeflow.data.idx import encode_idx, md5_bytes

REPO = Path(__file__).resolve().parents[1]
# Real, byte-exact MNIST (gzip IDX files), used as an offline file:// mirror.
MNIST_MIRROR = (REPO / ".." / "shared" / "data" / "mnist").resolve()

FILE_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


@pytest.fixture(scope="session")
def mnist_mirror() -> Path:
    if not (MNIST_MIRROR / "t10k-labels-idx1-ubyte.gz").is_file():
        pytest.fail(f"real MNIST mirror missing at {MNIST_MIRROR} (see ../shared/data/README.md)")
    return MNIST_MIRROR


def make_synthetic_idx(
    folder: Path, n_train: int = 120, n_test: int = 40, side: int = 28, seed: int = 0, gz: bool = False
) -> dict[str, dict[str, str]]:
    """Write four tiny IDX files (blobs of 10 classes); return the `data.files` config for them."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        images = rng.integers(0, 40, size=(n, side, side), dtype=np.uint8)
        for i, c in enumerate(labels):  # a bright square whose place encodes the class
            r = 2 + 2 * int(c)
            images[i, r : r + 6, r : r + 6] = 255
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels
    files = {}
    for key, array in arrays.items():
        data = encode_idx(array)
        name = FILE_NAMES[key]
        (folder / (name + ".gz" if gz else name)).write_bytes(gzip.compress(data) if gz else data)
        files[key] = {"file": name, "md5": md5_bytes(data)}
    return files


@pytest.fixture
def synthetic_data(tmp_path: Path) -> tuple[Path, dict]:
    folder = tmp_path / "data"
    return folder, make_synthetic_idx(folder)


@pytest.fixture
def tiny_cfg(tmp_path: Path, synthetic_data):
    """The real default config, pointed at tiny synthetic data and tmp_path outputs."""
    folder, files = synthetic_data
    cfg = compose(
        [
            "trainer.max_epochs=2",
            "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false",
            "trainer.log_every_n_steps=1",
            "data.batch_size=16",
            "data.val_size=20",
        ]
    )
    cfg.data.files = files
    cfg.paths.data = str(folder)
    for key in (
        "checkpoints",
        "run_info",
        "train_metrics",
        "eval_metrics",
        "loss_curve",
        "figures",
        "resume",
        "eval_details",
        "per_digit",
        "report_html",
        "report_md",
    ):
        cfg.paths[key] = str(tmp_path / "out" / cfg.paths[key])
    cfg.mlflow.tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return cfg
