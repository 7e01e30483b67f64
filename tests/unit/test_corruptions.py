"""Shifted copies of test images: deterministic per seed, the right shape and type, each one a real change."""

import pytest
import torch

from aeflow.evaluation.corruptions import CORRUPTIONS, corrupt, shifted_copies


def _digits(n=8, side=28):
    gen = torch.Generator().manual_seed(0)
    images = torch.zeros(n, 1, side, side, dtype=torch.uint8)
    # An off-centre bright bar: flips, shifts and rotations all move it.
    images[:, :, 4:20, 6:10] = torch.randint(150, 256, (n, 1, 16, 4), generator=gen, dtype=torch.uint8)
    return images


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_each_corruption_is_deterministic_changes_the_images_and_keeps_shape(name):
    images = _digits()
    out = corrupt(images, name, seed=3)
    assert out.dtype == torch.uint8 and out.shape == images.shape
    assert torch.equal(out, corrupt(images, name, seed=3))
    changed = (out != images).flatten(1).any(1)
    assert changed.all(), f"{name} left {int((~changed).sum())} images unchanged"
    assert torch.equal(images, _digits()), "the input was modified in place"


@pytest.mark.parametrize(
    "name", [n for n in sorted(CORRUPTIONS) if n not in ("flip_lr", "flip_ud", "invert", "blur")]
)
def test_random_corruptions_differ_between_seeds(name):
    images = _digits()
    assert not torch.equal(corrupt(images, name, seed=0), corrupt(images, name, seed=1))


def test_blur_is_the_7x7_gaussian_convolution_with_reflected_edges():
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 3, 28, 20), generator=gen, dtype=torch.uint8)
    r = torch.arange(-3, 4, dtype=torch.float64)
    k = torch.exp(-(r**2) / (2 * 1.5**2))
    kernel = (k[:, None] * k[None, :] / k.sum() ** 2).expand(3, 1, 7, 7)
    padded = F.pad(images.double(), (3, 3, 3, 3), mode="reflect")
    expected = F.conv2d(padded, kernel, groups=3).round().clamp(0, 255).to(torch.uint8)
    assert torch.equal(corrupt(images, "blur"), expected)


def test_flips_and_inversion_are_exact():
    images = _digits()
    assert torch.equal(corrupt(images, "flip_lr"), images.flip(-1))
    assert torch.equal(corrupt(images, "flip_ud"), images.flip(-2))
    assert torch.equal(corrupt(images, "invert"), 255 - images)


def test_a_copy_does_not_depend_on_which_other_corruptions_run():
    images = _digits()
    alone = shifted_copies(images, ["gaussian_noise"], seed=5)["gaussian_noise"]
    together = shifted_copies(images, ["rotate", "occlusion", "gaussian_noise"], seed=5)["gaussian_noise"]
    assert torch.equal(alone, together)


def test_bad_names_and_inputs_are_refused_with_the_fix():
    with pytest.raises(ValueError, match=r"unknown corruption\(s\) \['fog'\]; allowed: flip_lr"):
        shifted_copies(_digits(), ["rotate", "fog"])
    with pytest.raises(ValueError, match=r"unsqueeze\(1\)"):
        corrupt(_digits()[:, 0], "rotate")
    with pytest.raises(ValueError, match="torch.float32"):
        corrupt(_digits().float(), "rotate")
