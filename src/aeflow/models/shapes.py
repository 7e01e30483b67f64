"""Flattened square images: (N, H*W) rows back to (N, H, W), for numpy arrays and tensors alike."""

from __future__ import annotations

import math
from typing import TypeVar

Array = TypeVar("Array")  # a numpy array or a torch tensor: both have .shape and .reshape


def square_side(pixels: int) -> int:
    """The side H of a square image of `pixels` = H * H pixels."""
    side = math.isqrt(pixels)
    if side * side != pixels:
        raise ValueError(f"{pixels} pixels are not a square image (H*W columns with H == W)")
    return side


def unflatten_square(rows: Array) -> Array:
    """(N, H*W) -> (N, H, W) for square images."""
    side = square_side(rows.shape[1])
    return rows.reshape(len(rows), side, side)
