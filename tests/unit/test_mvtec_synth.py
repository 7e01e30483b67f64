"""The synthetic MVTec-layout generator: layout, determinism, exact masks, structural defects."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from aeflow.data.mvtec_synth import DEFECTS, STRUCTURAL_DEFECTS, generate, render


def _pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_layout_is_mvtec(tmp_path):
    root = generate(tmp_path, "tex", n_train=3, n_test=2, size=32, seed=1)
    assert root == tmp_path / "tex"
    assert sorted(p.name for p in (root / "train" / "good").iterdir()) == ["000.png", "001.png", "002.png"]
    assert sorted(p.name for p in (root / "test").iterdir()) == sorted(["good", *DEFECTS])
    assert sorted(p.name for p in (root / "ground_truth").iterdir()) == sorted(DEFECTS)
    for defect in DEFECTS:
        for i in range(2):
            image = _pixels(root / "test" / defect / f"{i:03d}.png")
            mask = _pixels(root / "ground_truth" / defect / f"{i:03d}_mask.png")
            assert image.shape == mask.shape == (32, 32)
            assert set(np.unique(mask)) == {0, 255}


def test_seeded_and_stable_when_the_set_grows(tmp_path):
    small = generate(tmp_path / "a", n_train=2, n_test=1, size=32, seed=3, channels=3)
    large = generate(tmp_path / "b", n_train=4, n_test=2, size=32, seed=3, channels=3)
    other = generate(tmp_path / "c", n_train=2, n_test=1, size=32, seed=4, channels=3)
    for rel in ("train/good/001.png", "test/rotated/000.png", "ground_truth/scratch/000_mask.png"):
        assert np.array_equal(_pixels(small / rel), _pixels(large / rel))
    assert _pixels(small / "train/good/001.png").shape == (32, 32, 3)
    assert not np.array_equal(_pixels(small / "train/good/001.png"), _pixels(other / "train/good/001.png"))


@pytest.mark.parametrize("defect", DEFECTS)
def test_mask_is_exactly_where_the_image_changed(defect):
    good, _ = render(np.random.default_rng([5, 1, 0, 0]), 64, None)
    # The same stream draws the same texture and noise first, then the defect.
    bad, mask = render(np.random.default_rng([5, 1, 0, 0]), 64, defect)
    changed = ~np.isclose(good, bad)
    assert mask.any() and changed.any()
    assert not (changed & ~mask).any()  # nothing changes outside the mask
    assert changed[mask].mean() > 0.9  # and (almost) every masked pixel changes


@pytest.mark.parametrize("defect", STRUCTURAL_DEFECTS)
def test_structural_defects_keep_the_mean_intensity(defect):
    rng = np.random.default_rng(0)
    shifts, contrast = [], []
    for _ in range(20):
        image, mask = render(rng, 64, defect)
        shifts.append(abs(image[mask].mean() - image[~mask].mean()))
    # A stain shifts its region by 0.25; a structural defect leaves the mean within noise.
    assert np.mean(shifts) < 0.03
    image, mask = render(np.random.default_rng(1), 64, "stain")
    contrast.append(abs(image[mask].mean() - image[~mask].mean()))
    assert contrast[0] > 0.15


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="defects \\['dent'\\]"):
        generate(tmp_path, defects=("dent",))
    with pytest.raises(ValueError, match="channels=2"):
        generate(tmp_path, channels=2)
