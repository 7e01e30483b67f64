"""Image shapes: flattened square images back to (N, H, W), image sizes as (H, W), and the sides
a stack of stride-2 convolutions can take."""

from __future__ import annotations

import math
from collections.abc import Sequence
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


def height_width(size: int | Sequence[int]) -> tuple[int, int]:
    """An image size as (H, W): a side S means S x S, a pair [H, W] is H x W."""
    if isinstance(size, int):
        return size, size
    height, width = (int(s) for s in size)
    return height, width


def conv_side(side: int, n_layers: int) -> int:
    """Side of the feature map after `n_layers` stride-2, kernel-3, padding-1 convolutions."""
    for _ in range(n_layers):
        side = (side + 1) // 2
    return side


def check_conv_size(size: int | Sequence[int], n_layers: int) -> None:
    """Every one of `n_layers` stride-2 convolutions gets at least 2 pixels a side to halve.

    A side that reaches 1 before the last convolution leaves that convolution a single pixel
    and its padding: it halves nothing, and the decoder's mirror of it draws from nothing.
    """
    for name, side in zip(("H", "W"), height_width(size)):
        if side < 1 or conv_side(side, n_layers - 1) < 2:
            smallest = 2 ** (n_layers - 1) + 1 if n_layers > 1 else 2
            raise ValueError(
                f"image {name}={side} is too small for {n_layers} stride-2 convolutions: "
                f"each needs at least 2 pixels a side; use sides of at least {smallest} "
                f"or at most {max_conv_layers(side)} convolution(s)"
            )


def max_conv_layers(side: int) -> int:
    """How many stride-2 convolutions a side allows (check_conv_size's rule)."""
    n = 0
    while side >= 2:
        side, n = (side + 1) // 2, n + 1
    return n
