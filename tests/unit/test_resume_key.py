"""The resume key: a checkpoint is resumed only by the same config and the same code.

The key is computed on a copy of the package, so that its source can be edited.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import aeflow
from aeflow.config.params import compose
from aeflow.training import recovery
from tests.helpers import REPO


@pytest.fixture
def package_copy(tmp_path, monkeypatch) -> Path:
    """A copy of the aeflow package that the resume key hashes instead of the real one."""
    copy = tmp_path / "aeflow"
    shutil.copytree(Path(aeflow.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(recovery, "PACKAGE", copy)
    return copy


def test_the_key_hashes_the_whole_aeflow_package():
    # Models and data modules decide what a checkpoint holds as much as the training loop does.
    assert recovery.code_hash() == recovery.code_hash(Path(aeflow.__file__).resolve().parent)


@pytest.mark.parametrize(
    "module", ["models/autoencoder.py", "data/datamodule.py", "training/train.py", "__init__.py"]
)
def test_a_source_change_anywhere_in_the_package_gives_a_new_key(package_copy, module):
    cfg = compose([], conf_dir=REPO / "conf")
    source = package_copy / module
    original = source.read_text()
    before = recovery.resume_key(cfg)
    source.write_text(original + "\n# edited\n")
    assert recovery.resume_key(cfg) != before, f"editing {module} kept the key: its checkpoints resume"
    source.write_text(original)
    assert recovery.resume_key(cfg) == before  # the key is the content's, not the file's time


def test_a_new_module_gives_a_new_key(package_copy):
    cfg = compose([], conf_dir=REPO / "conf")
    before = recovery.resume_key(cfg)
    (package_copy / "models" / "extra.py").write_text("LAYERS = 3\n")
    assert recovery.resume_key(cfg) != before


def test_where_runs_are_tracked_keeps_the_key():
    # The same training logged to another store resumes: the store is not part of the key.
    cfg = compose([], conf_dir=REPO / "conf")
    other = compose(["mlflow.tracking_uri=sqlite:///elsewhere.db"], conf_dir=REPO / "conf")
    assert recovery.resume_key(other) == recovery.resume_key(cfg)
    assert recovery.resume_key(compose(["seed=7"], conf_dir=REPO / "conf")) != recovery.resume_key(cfg)
