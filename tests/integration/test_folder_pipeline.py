"""Your own images through the real pipeline: `dvc exp run -S data=folder -S data.path=...` in a
temporary clone (real git, real DVC) on a generated folder of PNGs in class subfolders."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.helpers import clone_project, ran_stages, run
from tests.image_folders import truncate, write_classes

pytestmark = pytest.mark.integration
ALL_STAGES = {"download", "baselines", "train", "evaluate", "package", "visualize"}

CLASSES = {"circle": 100, "square": 100, "star": 100}
SMALL = [
    "data.batch_size=32",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "evaluate.probe_train_size=100",
    "visualize.map_points=50",
]


def exp_run(project: Path, images: Path, check: bool = True):
    overrides = ["data=folder", f"data.path={images}", *SMALL]
    return run(project, "dvc", "exp", "run", *[a for o in overrides for a in ("-S", o)], check=check)


def splits_of(data: Path) -> dict[str, str]:
    """{image file: split} of the packed data."""
    return {
        name: split
        for split in ("train", "val", "test")
        for name in (data / f"{split}_files.txt").read_text().split()
    }


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> tuple[Path, Path]:
    project = clone_project(tmp_path_factory.mktemp("project"))
    images = tmp_path_factory.mktemp("images")
    write_classes(images, CLASSES)
    proc = exp_run(project, images)
    assert ran_stages(proc.stdout) == ALL_STAGES
    return project, images


def test_exp_run_packs_trains_evaluates_and_reports(project):
    project, images = project
    manifest = json.loads((project / "data/raw/manifest.json").read_text())
    assert manifest["classes"] == sorted(CLASSES) and sum(manifest["counts"].values()) == 300
    assert np.load(project / "data/raw/train_images.npy", mmap_mode="r").shape[1:] == (1, 28, 28)
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]["download"]
    assert str(images) in {dep["path"] for dep in lock["deps"]}  # the folder is a dependency
    metrics = json.loads((project / "metrics/evaluate.json").read_text())
    assert 0 < metrics["test"]["sq_err_per_image"] < 784 and math.isfinite(metrics["pca"]["sq_err_per_image"])
    assert set(metrics["test"]["sq_err_per_image_by_digit"]) == {"0", "1", "2"}
    for rel in ("reports/report.html", "plots/figures/reconstructions.png", "models/best.ckpt"):
        assert (project / rel).stat().st_size > 0, rel


def test_adding_images_repacks_and_keeps_every_old_split(project):
    project, images = project
    assert ran_stages(exp_run(project, images).stdout) == set()  # nothing changed: nothing runs
    before = splits_of(project / "data/raw")
    write_classes(images, {name: 20 for name in CLASSES}, start=100)
    assert ran_stages(exp_run(project, images).stdout) == ALL_STAGES
    after = splits_of(project / "data/raw")
    assert len(after) == 360 and {name: after[name] for name in before} == before


def test_a_corrupt_image_fails_the_data_stage_and_names_it(project):
    project, images = project
    truncate(images / "star" / "img_00007.png")
    proc = exp_run(project, images, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "1 bad image file(s)" in output and "star/img_00007.png: unreadable image" in output
    assert ran_stages(proc.stdout) == {"download"}
