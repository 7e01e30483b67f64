"""Anomaly maps: L2 and SSIM residuals, smoothing, image scores, batches."""

from __future__ import annotations

import pytest
import torch

from aeflow.errors import ConfigError
from aeflow.evaluation.anomaly_maps import (
    MapSettings,
    anomaly_map,
    batched_maps,
    image_scores,
    l2_map,
    smooth,
    ssim_map,
)
from aeflow.evaluation.metrics import ssim_per_image


def _stripes(size: int = 32, vertical: bool = False) -> torch.Tensor:
    axis = torch.arange(size, dtype=torch.float32)
    wave = 0.5 + 0.3 * torch.sin(2 * torch.pi * axis / 6)
    return (wave[None, :] if vertical else wave[:, None]).expand(size, size).clone()


def test_l2_map_is_the_rms_residual_over_channels():
    x = torch.zeros(1, 3, 4, 4)
    recon = x.clone()
    recon[0, :, 1, 2] = torch.tensor([0.3, 0.0, 0.4])
    expected = torch.zeros(1, 4, 4)
    expected[0, 1, 2] = ((0.09 + 0.16) / 3) ** 0.5
    assert torch.allclose(l2_map(x, recon), expected)


def test_ssim_map_averages_to_the_images_ssim():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 2, 24, 24, generator=g)
    y = (x + 0.1 * torch.randn(3, 2, 24, 24, generator=g)).clamp(0, 1)
    residual = ssim_map(x, y, window=11)
    assert residual.shape == (3, 24, 24) and 0 <= residual.min() and residual.max() <= 1
    # (1 - SSIM) / 2 per pixel: its mean gives back the project's SSIM per image (Wang et al.'s window).
    assert torch.allclose(1 - 2 * residual.double().mean((1, 2)), ssim_per_image(x, y), atol=1e-5)
    assert ssim_map(x, x).abs().max() < 1e-5


def test_ssim_sees_structure_that_l2_barely_sees():
    # Horizontal stripes reconstructed where the image has vertical ones, in a square: the same mean.
    image, recon = _stripes(), _stripes()
    image[8:24, 8:24] = _stripes(vertical=True)[8:24, 8:24]
    x, r = image[None, None], recon[None, None]
    inside = torch.zeros(32, 32, dtype=torch.bool)
    inside[10:22, 10:22] = True
    for kind, window in (("ssim", 7), ("l2", 7)):
        m = anomaly_map(x, r, MapSettings(kind, window))[0]
        assert m[~inside].mean() < 0.5 * m[inside].mean(), kind
    ssim = anomaly_map(x, r, MapSettings("ssim", 7))[0]
    assert ssim[inside].mean() > 0.3  # structure uncorrelated: SSIM near 0, residual near 1/2


def test_smoothing_keeps_a_constant_and_spreads_a_spike():
    flat = torch.full((1, 16, 16), 0.3)
    assert torch.allclose(smooth(flat, 2.0), flat, atol=1e-6)
    spike = torch.zeros(1, 16, 16)
    spike[0, 8, 8] = 1.0
    out = smooth(spike, 1.0)
    assert out[0, 8, 8] < 0.2 and out[0, 8, 9] > 0.05 and out.sum() == pytest.approx(1.0, abs=1e-4)
    assert smooth(spike, 0) is spike


def test_image_score_max_and_top_k():
    maps = torch.zeros(2, 10, 10)
    maps[0, 0, :4] = torch.tensor([1.0, 0.5, 0.5, 0.0])
    assert image_scores(maps, MapSettings(score="max")).tolist() == [1.0, 0.0]
    top = image_scores(maps, MapSettings(score="top_k", top_k=0.03))  # 3 of 100 pixels
    assert top[0] == pytest.approx(2 / 3)


def test_batches_cover_every_image_once_from_uint8():
    images = torch.randint(0, 256, (10, 3, 8, 8), dtype=torch.uint8)
    seen = []
    settings = (MapSettings("l2"), MapSettings("ssim", 3))
    for rows, x, _recon, maps in batched_maps(lambda x: x, images, settings, batch_size=4):
        seen.append(rows)
        assert x.dtype == torch.float32 and x.shape[1:] == (3, 8, 8)
        assert len(maps) == 2 and all(m.abs().max() < 1e-5 for m in maps)  # perfect reconstruction
    assert [(r.start, r.stop) for r in seen] == [(0, 4), (4, 8), (8, 10)]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "l1"}, "inspection.map='l1': allowed: l2, ssim"),
        ({"window": 8}, "inspection.ssim_window=8: must be odd, e.g. 9"),
        ({"sigma": -1}, "inspection.smoothing_sigma=-1"),
        ({"score": "mean"}, "inspection.image_score='mean': allowed: max, top_k"),
        ({"top_k": 0}, "inspection.top_k=0"),
    ],
)
def test_bad_settings_are_named(kwargs, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        MapSettings(**kwargs)
