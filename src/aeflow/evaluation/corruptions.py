"""Shifted copies of test images, in the spirit of MNIST-C (Mu & Gilmer, 2019).

Each corruption maps uint8 images (N, C, H, W) to uint8 images of the same shape,
deterministically for a given seed (a generator of its own per corruption, so the
copies do not depend on which other corruptions run). They need no extra data:
the anomaly metrics of the default run score these copies against the clean images.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from aeflow.evaluation.metrics import blur_matrix

Corruption = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _check(images: torch.Tensor) -> None:
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(
            f"expected uint8 images (N, C, H, W), got {images.dtype} {tuple(images.shape)}; "
            "add the channel of grey images with images.unsqueeze(1)"
        )


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return x.round().clamp(0, 255).to(torch.uint8)


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen, dtype=torch.float64)


def _affine(images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Bilinear warp of each image by its 2x3 matrix `theta` (N, 2, 3) in normalised coordinates."""
    grid = F.affine_grid(theta.float(), list(images.shape), align_corners=False)
    return _to_uint8(F.grid_sample(images.float(), grid, mode="bilinear", align_corners=False))


def flip_lr(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return images.flip(-1)


def flip_ud(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return images.flip(-2)


def rotate(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Rotated by 30 to 60 degrees, either way (per image)."""
    n = len(images)
    sign = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0).double()
    angle = sign * _uniform(n, math.radians(30), math.radians(60), gen)
    cos, sin, zero = angle.cos(), angle.sin(), torch.zeros(n, dtype=torch.float64)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    return _affine(images, theta)


def translate(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Shifted by 15 to 25% of the side, in a random direction (per image)."""
    n = len(images)
    angle = _uniform(n, 0, 2 * math.pi, gen)
    dist = 2 * _uniform(n, 0.15, 0.25, gen)  # normalised coordinates span 2
    one, zero = torch.ones(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
    theta = torch.stack(
        [torch.stack([one, zero, dist * angle.cos()], 1), torch.stack([zero, one, dist * angle.sin()], 1)], 1
    )
    return _affine(images, theta)


def gaussian_noise(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Independent Gaussian noise per pixel, standard deviation 0.3 of the pixel range."""
    return _to_uint8(
        images.double() + 0.3 * 255 * torch.randn(images.shape, generator=gen, dtype=torch.float64)
    )


def impulse_noise(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Salt and pepper: 10% of the pixels set to 0 or 255."""
    hit = torch.rand(images.shape, generator=gen) < 0.1
    salt = torch.rand(images.shape, generator=gen) < 0.5
    out = images.clone()
    out[hit] = torch.where(salt[hit], 255, 0).to(torch.uint8)
    return out


def blur(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Gaussian blur, sigma 1.5 pixels (7x7 kernel, edges padded by reflection)."""
    r = torch.arange(-3, 4, dtype=torch.float64)
    k = torch.exp(-(r**2) / (2 * 1.5**2))
    k = k / k.sum()  # (7,), sums to 1
    # The 2-D kernel is separable: B_h @ X @ B_w.T blurs every channel of every image with two
    # small matrix products, 9x faster than a float64 convolution and the same uint8 images.
    height, width = images.shape[-2:]
    return _to_uint8(blur_matrix(height, k) @ images.double() @ blur_matrix(width, k).T)


def occlusion(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A white square a third of the side wide, at a random place (per image)."""
    n, _, h, w = images.shape
    size = max(1, min(h, w) // 3)
    top = torch.randint(0, h - size + 1, (n,), generator=gen)
    left = torch.randint(0, w - size + 1, (n,), generator=gen)
    rows = torch.arange(h)[None, :, None]  # (1, H, 1)
    cols = torch.arange(w)[None, None, :]  # (1, 1, W)
    inside = (
        (rows >= top[:, None, None])
        & (rows < (top + size)[:, None, None])
        & (cols >= left[:, None, None])
        & (cols < (left + size)[:, None, None])
    )  # (N, H, W)
    return images.masked_fill(inside[:, None], 255)


def invert(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return 255 - images


CORRUPTIONS: dict[str, Corruption] = {
    "flip_lr": flip_lr,
    "flip_ud": flip_ud,
    "rotate": rotate,
    "translate": translate,
    "gaussian_noise": gaussian_noise,
    "impulse_noise": impulse_noise,
    "blur": blur,
    "occlusion": occlusion,
    "invert": invert,
}


def check_names(names: Sequence[str]) -> None:
    unknown = [n for n in names if n not in CORRUPTIONS]
    if unknown:
        raise ValueError(f"unknown corruption(s) {unknown}; allowed: {', '.join(CORRUPTIONS)}")


def corrupt(images: torch.Tensor, name: str, seed: int = 0) -> torch.Tensor:
    """A corrupted copy of uint8 `images` (N, C, H, W); the same (images, name, seed) give the same copy."""
    _check(images)
    check_names([name])
    # One generator per corruption, seeded from its name: adding a corruption changes no other copy.
    gen = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
    out = CORRUPTIONS[name](images, gen)
    assert out.shape == images.shape and out.dtype == torch.uint8  # noqa: S101 (each function's contract)
    return out


def shifted_copies(images: torch.Tensor, names: Sequence[str], seed: int = 0) -> dict[str, torch.Tensor]:
    """{name: corrupted copy} for each corruption in `names`, in that order."""
    check_names(names)
    return {name: corrupt(images, name, seed) for name in names}
