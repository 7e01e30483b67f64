"""A synthetic inspection data set in the MVTec AD layout: a striped texture with drawn defects.

    python -m aeflow.data.mvtec_synth OUT --category stripes --n-train 200 --n-test 20 --size 64 --seed 0

writes, for one category,

    OUT/<category>/train/good/000.png ...
    OUT/<category>/test/good/000.png ...
    OUT/<category>/test/<defect>/000.png ...
    OUT/<category>/ground_truth/<defect>/000_mask.png ...   (255: defect, 0: good)

Every good image is a sinusoidal stripe pattern (orientation, period and phase
jittered per image) plus fine pixel noise. The defect types:

- `scratch`: a thin bright or dark line (visible by brightness);
- `stain`: an ellipse whose intensity is shifted (visible by brightness);
- `rotated`: a disc whose stripes run at right angles to the rest (same mean
  and contrast: visible by structure only);
- `smooth`: a disc with the stripes removed, left at the texture's mean (same
  mean: visible by structure only).

A mask marks exactly the pixels the defect changed. Every image comes from its
own random stream, fixed by the seed, the split, the type and its number, so a
larger set keeps every image of a smaller one.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

DEFECTS = ("scratch", "stain", "rotated", "smooth")
# The defects that keep the local mean intensity: an L2 residual sees them only through texture.
STRUCTURAL_DEFECTS = ("rotated", "smooth")
TINT = np.array([0.85, 0.65, 0.45])  # the RGB colour of the texture's bright stripes
_STREAMS = {"train": 0, "test": 1}

Texture = Callable[[np.ndarray], np.ndarray]  # orientation offset (H, W) radians -> intensity (H, W)


def _texture(rng: np.random.Generator, size: int) -> tuple[Texture, np.ndarray]:
    """A stripe field (as a function of a per-pixel orientation offset) and its noise, in [0, 1]."""
    theta = np.deg2rad(30 + rng.uniform(-5, 5))
    period = rng.uniform(7.0, 9.0)
    phase = rng.uniform(0, 2 * np.pi)
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)

    def stripes(offset: np.ndarray) -> np.ndarray:
        angle = theta + offset
        return 0.5 + 0.3 * np.sin(2 * np.pi * (x * np.cos(angle) + y * np.sin(angle)) / period + phase)

    return stripes, rng.normal(0, 0.03, (size, size))


def _disc(rng: np.random.Generator, size: int, low: float, high: float) -> np.ndarray:
    """A boolean (H, W) disc of radius in [low, high) * size, wholly inside the image."""
    radius = rng.uniform(low, high) * size
    cy, cx = rng.uniform(radius + 1, size - radius - 1, 2)
    y, x = np.mgrid[0:size, 0:size]
    return (y - cy) ** 2 + (x - cx) ** 2 <= radius**2


def _ellipse(rng: np.random.Generator, size: int) -> np.ndarray:
    a, b = rng.uniform(0.08, 0.16, 2) * size
    angle = rng.uniform(0, np.pi)
    cy, cx = rng.uniform(0.25, 0.75, 2) * size
    y, x = np.mgrid[0:size, 0:size] - np.array([cy, cx])[:, None, None]
    u, v = x * np.cos(angle) + y * np.sin(angle), -x * np.sin(angle) + y * np.cos(angle)
    return (u / a) ** 2 + (v / b) ** 2 <= 1


def _line(rng: np.random.Generator, size: int) -> np.ndarray:
    """A boolean (H, W) segment about 1.5 pixels wide and 30-60% of the side long."""
    length = rng.uniform(0.3, 0.6) * size
    angle = rng.uniform(0, np.pi)
    cy, cx = rng.uniform(0.3, 0.7, 2) * size
    y, x = np.mgrid[0:size, 0:size] - np.array([cy, cx])[:, None, None]
    along = x * np.cos(angle) + y * np.sin(angle)
    across = -x * np.sin(angle) + y * np.cos(angle)
    return (np.abs(along) <= length / 2) & (np.abs(across) <= 0.75)


def render(rng: np.random.Generator, size: int, defect: str | None) -> tuple[np.ndarray, np.ndarray]:
    """(intensity float (H, W) in [0, 1], mask bool (H, W)) of one image; `defect` None: a good one."""
    stripes, noise = _texture(rng, size)
    zero = np.zeros((size, size))
    image, mask = stripes(zero), np.zeros((size, size), dtype=bool)
    if defect == "scratch":
        mask = _line(rng, size)
        image = np.where(mask, rng.choice([0.02, 0.98]), image)
    elif defect == "stain":
        mask = _ellipse(rng, size)
        image = np.where(mask, image + rng.choice([-0.25, 0.25]), image)
    elif defect == "rotated":
        mask = _disc(rng, size, 0.12, 0.2)
        image = np.where(mask, stripes(zero + np.pi / 2), image)
    elif defect == "smooth":
        mask = _disc(rng, size, 0.12, 0.2)
        image = np.where(mask, 0.5, image)
    elif defect is not None:
        raise ValueError(f"defect={defect!r}: allowed: {', '.join(DEFECTS)} or None (good)")
    return np.clip(image + noise, 0, 1), mask


def _to_png(intensity: np.ndarray, channels: int) -> Image.Image:
    if channels == 1:
        return Image.fromarray(np.rint(intensity * 255).astype(np.uint8), "L")
    rgb = intensity[..., None] * TINT + (1 - TINT) * 0.2  # (H, W, 3): a tinted copy of the texture
    return Image.fromarray(np.rint(np.clip(rgb, 0, 1) * 255).astype(np.uint8), "RGB")


def generate(
    out: str | Path,
    category: str = "stripes",
    n_train: int = 200,
    n_test: int = 20,
    size: int = 64,
    seed: int = 0,
    channels: int = 1,
    defects: tuple[str, ...] = DEFECTS,
) -> Path:
    """Write the data set (see the module docstring) and return `out/<category>`.

    `n_test`: test images of each type (good and each defect).
    """
    if channels not in (1, 3):
        raise ValueError(f"channels={channels!r}: allowed: 1 (grey), 3 (RGB)")
    unknown = sorted(set(defects) - set(DEFECTS))
    if unknown:
        raise ValueError(f"defects {unknown}: allowed: {', '.join(DEFECTS)}")
    if size < 16:
        raise ValueError(f"size={size}: at least 16 pixels, so that a defect fits inside the image")
    root = Path(out) / category
    jobs = [("train", "good", i) for i in range(n_train)]
    jobs += [("test", kind, i) for kind in ("good", *defects) for i in range(n_test)]
    for split, kind, i in jobs:
        type_id = 0 if kind == "good" else 1 + DEFECTS.index(kind)
        rng = np.random.default_rng([seed, _STREAMS[split], type_id, i])
        intensity, mask = render(rng, size, None if kind == "good" else kind)
        path = root / split / kind / f"{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        _to_png(intensity, channels).save(path)
        if kind != "good":
            mask_path = root / "ground_truth" / kind / f"{i:03d}_mask.png"
            mask_path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask.astype(np.uint8) * 255, "L").save(mask_path)
    log.info("wrote %d images to %s", len(jobs), root)
    return root


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="folder to write <category>/ into")
    parser.add_argument("--category", default="stripes")
    parser.add_argument("--n-train", type=int, default=200, help="good training images")
    parser.add_argument("--n-test", type=int, default=20, help="test images of each type")
    parser.add_argument("--size", type=int, default=64, help="side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--channels", type=int, default=1, choices=(1, 3))
    parser.add_argument("--defects", nargs="+", default=list(DEFECTS), choices=DEFECTS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    generate(
        args.out,
        args.category,
        args.n_train,
        args.n_test,
        args.size,
        args.seed,
        args.channels,
        tuple(args.defects),
    )


if __name__ == "__main__":
    main()
