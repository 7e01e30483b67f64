"""Shifted copies of test images, in the spirit of MNIST-C (Mu & Gilmer, 2019).

Each corruption maps uint8 images (N, C, H, W) to uint8 images of the same shape,
deterministically for a given seed, whole (`corrupt`) or batch by batch with the same
result (`CorruptedImages`) (a generator of its own per corruption, so the
copies do not depend on which other corruptions run). They need no extra data:
the anomaly metrics of the default run score these copies against the clean images.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F

from aeflow.evaluation.metrics import blur_matrix
from aeflow.evaluation.streaming import rows_per_batch

# impulse_noise's skip-ahead of the salt generator: at most this many images a draw, and
# this many bytes counted as rows_per_batch counts them (float64; the draws are float32).
SKIP_ROWS, SKIP_BYTES = 4096, 64 * 2**20

# A corruption is planned for a whole set, then applied batch by batch: `plan(n, shape, gen)`
# draws what varies per image (angles, offsets) for all `n` images of `shape` (C, H, W) up front
# (a few numbers each) and returns `apply(batch, start)`, which corrupts the images
# start..start+len(batch)-1 and must be called on consecutive batches in order (per-pixel noise
# is drawn from the generator as it goes; batches of a multiple of 16 images draw the same
# numbers as one draw for the whole set). So a copy equals the whole-set copy at any batch size.
Apply = Callable[[torch.Tensor, int], torch.Tensor]
Plan = Callable[[int, tuple[int, int, int], torch.Generator], Apply]


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


def _warp(theta: torch.Tensor) -> Apply:
    return lambda batch, start: _affine(batch, theta[start : start + len(batch)])


def flip_lr(n: int, shape: tuple[int, int, int], gen: torch.Generator) -> Apply:
    return lambda batch, start: batch.flip(-1)


def flip_ud(n: int, shape: tuple[int, int, int], gen: torch.Generator) -> Apply:
    return lambda batch, start: batch.flip(-2)


def rotate(n: int, shape: tuple[int, int, int], gen: torch.Generator) -> Apply:
    """Rotated by 30 to 60 degrees, either way (per image)."""
    sign = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0).double()
    angle = sign * _uniform(n, math.radians(30), math.radians(60), gen)
    cos, sin, zero = angle.cos(), angle.sin(), torch.zeros(n, dtype=torch.float64)
    return _warp(torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1))


def translate(n: int, shape: tuple[int, int, int], gen: torch.Generator) -> Apply:
    """Shifted by 15 to 25% of the side, in a random direction (per image)."""
    angle = _uniform(n, 0, 2 * math.pi, gen)
    dist = 2 * _uniform(n, 0.15, 0.25, gen)  # normalised coordinates span 2
    one, zero = torch.ones(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
    return _warp(
        torch.stack(
            [
                torch.stack([one, zero, dist * angle.cos()], 1),
                torch.stack([zero, one, dist * angle.sin()], 1),
            ],
            1,
        )
    )


def gaussian_noise(n: int, shape: tuple[int, int, int], gen: torch.Generator) -> Apply:
    """Independent Gaussian noise per pixel, standard deviation 0.3 of the pixel range."""
    return lambda batch, start: _to_uint8(
        batch.double() + 0.3 * 255 * torch.randn(batch.shape, generator=gen, dtype=torch.float64)
    )


def impulse_noise(n: int, shape: tuple[int, int, int], gen: torch.Generator) -> Apply:
    """Salt and pepper: 10% of the pixels set to 0 or 255."""
    # The set's hit mask is drawn first, then its salt mask; batch by batch, a second generator
    # starts where the hit draws of all n images end.
    salt_gen = torch.Generator().set_state(gen.get_state())
    per_image = math.prod(shape)
    # Skipped in chunks of whole 16-value blocks, which leave the generator where one draw of all
    # would: 4,096 MNIST images, fewer large ones (4,096 of 128x128 RGB would be 805 MB of floats).
    rows = rows_per_batch(per_image, max_rows=SKIP_ROWS, batch_bytes=SKIP_BYTES)
    for start in range(0, n, rows):
        torch.rand(min(rows, n - start) * per_image, generator=salt_gen)

    def apply(batch: torch.Tensor, start: int) -> torch.Tensor:
        hit = torch.rand(batch.shape, generator=gen) < 0.1
        salt = torch.rand(batch.shape, generator=salt_gen) < 0.5
        out = batch.clone()
        out[hit] = torch.where(salt[hit], 255, 0).to(torch.uint8)
        return out

    return apply


def blur(n: int, shape: tuple[int, int, int], gen: torch.Generator) -> Apply:
    """Gaussian blur, sigma 1.5 pixels (7x7 kernel, edges padded by reflection)."""
    r = torch.arange(-3, 4, dtype=torch.float64)
    k = torch.exp(-(r**2) / (2 * 1.5**2))
    k = k / k.sum()  # (7,), sums to 1
    # The 2-D kernel is separable: B_h @ X @ B_w.T blurs every channel of every image with two
    # small matrix products, 9x faster than a float64 convolution and the same uint8 images.
    rows, cols = blur_matrix(shape[1], k), blur_matrix(shape[2], k).T
    return lambda batch, start: _to_uint8(rows @ batch.double() @ cols)


def occlusion(n: int, shape: tuple[int, int, int], gen: torch.Generator) -> Apply:
    """A white square a third of the side wide, at a random place (per image)."""
    _, h, w = shape
    size = max(1, min(h, w) // 3)
    top = torch.randint(0, h - size + 1, (n,), generator=gen)
    left = torch.randint(0, w - size + 1, (n,), generator=gen)
    rows = torch.arange(h)[None, :, None]  # (1, H, 1)
    cols = torch.arange(w)[None, None, :]  # (1, 1, W)

    def apply(batch: torch.Tensor, start: int) -> torch.Tensor:
        t, c = top[start : start + len(batch), None, None], left[start : start + len(batch), None, None]
        inside = (rows >= t) & (rows < t + size) & (cols >= c) & (cols < c + size)  # (B, H, W)
        return batch.masked_fill(inside[:, None], 255)

    return apply


def invert(n: int, shape: tuple[int, int, int], gen: torch.Generator) -> Apply:
    return lambda batch, start: 255 - batch


CORRUPTIONS: dict[str, Plan] = {
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


def _generator(name: str, seed: int) -> torch.Generator:
    # One generator per corruption, seeded from its name: adding a corruption changes no other copy.
    return torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))


def corrupt(images: torch.Tensor, name: str, seed: int = 0) -> torch.Tensor:
    """A corrupted copy of uint8 `images` (N, C, H, W); the same (images, name, seed) give the same copy."""
    _check(images)
    check_names([name])
    out = CORRUPTIONS[name](len(images), tuple(images.shape[1:]), _generator(name, seed))(images, 0)
    assert out.shape == images.shape and out.dtype == torch.uint8  # noqa: S101 (each function's contract)
    return out


class CorruptedImages:
    """The corrupted copy `corrupt(images, name, seed)` made batch by batch, never whole: an image
    source (aeflow.evaluation.streaming) of uint8 (B, C, H, W) batches. `images` (N, C, H, W) may
    be a memory map or `streaming.Rows`; each `batches` call starts the copy afresh."""

    def __init__(self, images, name: str, seed: int = 0) -> None:
        check_names([name])
        self.images, self.name, self.seed = images, name, seed
        self.image_shape = tuple(images.image_shape if hasattr(images, "image_shape") else images.shape[1:])
        if len(self.image_shape) != 3:
            raise ValueError(f"expected images (N, C, H, W), got images of shape {self.image_shape}")

    def __len__(self) -> int:
        return len(self.images)

    def batches(self, size: int) -> Iterator[torch.Tensor]:
        from aeflow.evaluation.streaming import ROW_MULTIPLE, batches

        if size * math.prod(self.image_shape) % ROW_MULTIPLE:
            # The per-pixel noise is drawn in blocks of 16 values: batches must hold whole blocks.
            size = max(ROW_MULTIPLE, size - size % ROW_MULTIPLE)
        apply = CORRUPTIONS[self.name](len(self.images), self.image_shape, _generator(self.name, self.seed))
        start = 0
        for batch in batches(self.images, size):
            _check(batch)
            yield apply(batch, start)
            start += len(batch)


def shifted_copies(images: torch.Tensor, names: Sequence[str], seed: int = 0) -> dict[str, torch.Tensor]:
    """{name: corrupted copy} for each corruption in `names`, in that order."""
    check_names(names)
    return {name: corrupt(images, name, seed) for name in names}


def shifted_sources(images, names: Sequence[str], seed: int = 0) -> dict[str, CorruptedImages]:
    """{name: the corrupted copy as batches} for each corruption in `names`: what the evaluation
    scores, one batch in memory at a time."""
    check_names(names)
    return {name: CorruptedImages(images, name, seed) for name in names}
