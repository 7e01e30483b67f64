"""The anomaly evaluation, the served detector's fit and the test set's scoring stream their
splits: on memory-mapped splits of 64x64 RGB images their memory stays far below the floats of
the training and test splits. Training on a memory-mapped folder pack runs under a memory cap
that the training split as floats exceeds."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from aeflow.data.pack import PackSpec, pack_folder
from tests.helpers import REPO
from tests.image_folders import write_images

pytestmark = pytest.mark.integration

SIZES = {"train": 6000, "val": 500, "test": 500}
SHAPE = (3, 64, 64)
# The training split as float32 is 295 MB: the probes' training subsample (evaluate.probe_train_size
# images, 10,000) made float whole would be all of it, twice while scaled; streaming keeps batches
# of 160 images and a subsample of at most scoring.PROBE_BYTES (2,730 images, 134 MB).
# Measured: 471 MB streamed, 987 MB with whole float splits; the cap sits between with room for
# allocator noise on either side.
CAP_MB = 650


def probe_growth(script: str, *args: str, timeout: int) -> float:
    """The peak anonymous memory growth (MB) that tests/`script` prints, run in its own process
    with one thread (the probes import `tests.memory_probe`: the checkout is on the path)."""
    env = dict(os.environ, PYTHONPATH=f"{REPO / 'src'}:{REPO}", OMP_NUM_THREADS="1", MALLOC_ARENA_MAX="2")
    proc = subprocess.run(
        [sys.executable, str(REPO / "tests" / script), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])["peak_anon_growth_mb"]


def test_evaluation_scoring_and_detector_fit_stay_under_a_cap_the_float_split_exceeds(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in SIZES.items():
        images = np.lib.format.open_memmap(tmp_path / f"{split}_images.npy", "w+", np.uint8, (n, *SHAPE))
        for start in range(0, n, 500):  # written in parts: the test itself stays small
            images[start : start + 500] = rng.integers(0, 256, (min(500, n - start), *SHAPE), dtype=np.uint8)
        images.flush()
        del images
    growth = probe_growth("memory_probe.py", str(tmp_path), timeout=900)
    assert growth < CAP_MB, f"peak anonymous memory grew by {growth} MB (cap {CAP_MB} MB)"


# 128x128 RGB: the training split (about 2,400 images) is 118 MB packed, 470 MB as float32.
# Training it memory-mapped grew the process's data size by 112 MB (torch's and Lightning's
# allocations, threads' stacks, batches of 32); the cap sits between.
TRAIN_HEADROOM_MB = 300


def test_training_on_a_mapped_pack_runs_under_a_cap_the_float_training_split_exceeds(tmp_path):
    # Small PNGs, packed stretched to 128x128: the pack is large, the images cost little to write.
    write_images(tmp_path / "images", 3000, mode="RGB", size=(32, 32))
    manifest = pack_folder(
        tmp_path / "images", tmp_path / "pack", PackSpec((128, 128), channels=3, resize="resize"), workers=1
    )
    float_train_mb = manifest["counts"]["train"] * 3 * 128 * 128 * 4 / 1e6
    assert float_train_mb > 1.5 * TRAIN_HEADROOM_MB  # the cap must be one the float split breaks
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1", MALLOC_ARENA_MAX="2")
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "tests" / "training_memory_probe.py"),
            str(tmp_path / "pack"),
            str(tmp_path / "out"),
            str(TRAIN_HEADROOM_MB),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
    )
    assert proc.returncode == 0, f"training failed under a {TRAIN_HEADROOM_MB} MB cap:\n{proc.stderr[-3000:]}"
    growth = json.loads(proc.stdout.strip().splitlines()[-1])["peak_data_growth_mb"]
    assert growth < TRAIN_HEADROOM_MB


# Per-image results kept as a list of small tensors, one per batch, split the heap's freed batch
# temporaries so that every batch grew it: measured 584 MB for 15 batches here and 4,833 MB for
# 150. Gathered into one tensor: 214 MB and 286 MB, the peak of one batch however many there are.
FEW_IMAGES, MANY_IMAGES = 15 * 160, 150 * 160
GROWTH_ALLOWED_MB = 200


def test_scoring_memory_does_not_grow_with_the_number_of_batches():
    few, many = (
        probe_growth("batch_growth_probe.py", str(n), timeout=600) for n in (FEW_IMAGES, MANY_IMAGES)
    )
    assert many - few < GROWTH_ALLOWED_MB, (
        f"peak anonymous memory {few} MB for {FEW_IMAGES} images, {many} MB for {MANY_IMAGES}"
    )
