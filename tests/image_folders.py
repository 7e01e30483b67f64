"""Real image folders for the folder data tests: PNG files written with Pillow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_images(
    folder: Path, count: int, mode: str = "L", size: tuple[int, int] = (28, 28), seed: int = 0, start: int = 0
) -> list[Path]:
    """`count` random PNGs of `size` (H, W) in Pillow `mode` under `folder`, named img_<start+i>.png."""
    rng = np.random.default_rng(seed)
    shape = size if mode == "L" else (*size, 3)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(start, start + count):
        path = folder / f"img_{i:05d}.png"
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)
        paths.append(path)
    return paths


def write_classes(
    root: Path, classes: dict[str, int], mode: str = "L", size: tuple[int, int] = (28, 28), start: int = 0
) -> list[Path]:
    """`root/<class>/img_*.png`: `classes` maps each class name to its number of images."""
    paths = []
    for seed, (name, count) in enumerate(classes.items()):
        paths += write_images(root / name, count, mode, size, seed=seed + start, start=start)
    return paths


def truncate(path: Path, keep: int = 100) -> Path:
    """Cut `path` to its first `keep` bytes: a PNG whose pixel data ends early."""
    path.write_bytes(path.read_bytes()[:keep])
    return path
