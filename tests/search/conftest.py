"""Fixtures for search tests: real MNIST (decompressed once), a project folder with its own conf/."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from aeflow.config.params import compose
from aeflow.data.download import download_dataset
from tests.conftest import REPO

PYTHON_BIN = str(Path(sys.executable).parent)


@pytest.fixture(scope="session")
def mnist_raw(tmp_path_factory, mnist_mirror) -> Path:
    """The four real MNIST IDX files, fetched from the local mirror by the project's own download."""
    folder = tmp_path_factory.mktemp("mnist")
    files = {k: dict(v) for k, v in compose([], conf_dir=REPO / "conf").data.files.items()}
    download_dataset(folder, files, [mnist_mirror.as_uri()])
    return folder


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """A folder with a copy of conf/ (presets are written there) and its own MLflow store."""
    shutil.copytree(REPO / "conf", tmp_path / "conf")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.delenv("AEFLOW_SEARCH_STORAGE", raising=False)
    return tmp_path


def tiny_search(data: Path, **changes) -> dict:
    """A search over the tutorial model on a slice of real MNIST: 2 epochs of 4 batches a trial."""
    spec = {
        "study": "tiny",
        "base": [
            f"paths.data={data}",
            "trainer.limit_train_batches=4",
            "trainer.limit_val_batches=2",
            "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false",
            "data.batch_size=64",
            "performance.num_threads=1",
        ],
        "objective": {"metric": "val/loss", "direction": "minimize"},
        "n_trials": 4,
        "budget": {"epochs": 2},
        "pruner": {"type": "none"},
        "space": {"optimizer.lr": "tag(log, interval(1e-4, 1e-1))", "model.latent_dim": "choice(8, 16)"},
    }
    spec.update(changes)
    return spec


def write_search(project: Path, spec: dict, name: str = "tiny.yaml") -> Path:
    path = project / "conf" / "search" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def worker_env(project: Path) -> dict[str, str]:
    env = dict(
        os.environ,
        PATH=f"{PYTHON_BIN}:{os.environ['PATH']}",
        PYTHONUNBUFFERED="1",
        OMP_NUM_THREADS="1",
        MLFLOW_TRACKING_URI=f"sqlite:///{project / 'mlflow.db'}",
    )
    env.pop("AEFLOW_SEARCH_STORAGE", None)
    return env
