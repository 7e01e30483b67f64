"""Image grids: one picture per row, images side by side, grey kept grey and colour kept colour."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from aeflow.reporting.figures import TILE_GAP, image_grid, save_figure, strip


def test_a_strip_holds_each_image_at_its_place_with_white_gaps_and_padding():
    row = torch.rand(2, 3, 4, 5)
    out = strip(row, n=3, channels=3)
    assert out.shape == (3, 4, 3 * 5 + 2 * TILE_GAP)
    assert torch.equal(out[:, :, :5], row[0])
    assert torch.equal(out[:, :, 5 + TILE_GAP : 10 + TILE_GAP], row[1])
    assert torch.all(out[:, :, 5 : 5 + TILE_GAP] == 1)  # gap
    assert torch.all(out[:, :, 10 + TILE_GAP :] == 1)  # the missing third image


def test_grey_images_are_repeated_into_a_colour_strip_and_clamped():
    grey = torch.tensor([[[[-1.0, 0.5], [2.0, 0.25]]]])  # (1, 1, 2, 2), out of range on purpose
    out = strip(grey, n=1, channels=3)
    expected = torch.tensor([[0.0, 0.5], [1.0, 0.25]])
    assert all(torch.equal(out[c], expected) for c in range(3))
    assert strip(grey[:, 0], n=1, channels=1).shape == (1, 2, 2)  # (n, H, W) rows too


def test_a_grid_of_colour_images_is_saved_in_colour_and_one_of_grey_images_in_grey(tmp_path):
    red = torch.zeros(4, 3, 8, 8)
    red[:, 0] = 1
    colour = save_figure(image_grid({"a": red, "b": red[:2]}, titles=list("wxyz")), tmp_path / "c.png")
    pixels = np.asarray(Image.open(colour).convert("RGB")).astype(int)
    assert ((pixels[..., 0] > 200) & (pixels[..., 1] < 50)).sum() > 100  # red images drawn red
    grey = save_figure(image_grid({"a": torch.full((4, 1, 8, 8), 0.5)}), tmp_path / "g.png")
    pixels = np.asarray(Image.open(grey).convert("RGB")).astype(int)
    assert np.all(pixels[..., 0] == pixels[..., 1]) and np.all(pixels[..., 1] == pixels[..., 2])
    assert ((pixels[..., 0] > 100) & (pixels[..., 0] < 160)).sum() > 100  # mid-grey images drawn mid-grey
