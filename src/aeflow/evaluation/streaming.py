"""Images processed batch by batch from uint8 splits, so no stage holds a whole split as floats.

A split's images are uint8 (N, H, W) or (N, C, H, W), usually a memory map of the packed
arrays: indexing a slice reads only those rows. Floats are made one batch at a time
(`float_batches`), per-image results are gathered (`per_image`), and statistics are summed
batch by batch (aeflow.evaluation.pca), so memory stays that of one batch however many images there are.

An image source is anything with `len()` whose slices are uint8 image batches (a tensor, a
memory map, `Rows`), or an object with a `batches(size)` method yielding them in order
(a corrupted copy, aeflow.evaluation.corruptions.CorruptedImages).

Batches are `rows_per_batch` images: at most `MAX_ROWS` (2048, what evaluation always used,
so MNIST's figures are computed on the same slices) and at most `BATCH_BYTES` of float64
pixels, so a batch of 64x64 RGB images is 160 images and one of 256x256 RGB photos 10, not
2048 (3.2 GB of float32).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch

MAX_ROWS = 2048
BATCH_BYTES = 16 * 2**20  # float64 pixels of one batch (a score makes a few such copies)
ROW_MULTIPLE = 16  # random draws in blocks of 16 values equal one draw of the whole set


def rows_per_batch(pixels: int, max_rows: int = MAX_ROWS, batch_bytes: int = BATCH_BYTES) -> int:
    """Images per batch for images of `pixels` values (C*H*W): at most `max_rows` and
    `batch_bytes` of float64, a multiple of `ROW_MULTIPLE` when more than that fits."""
    rows = min(max_rows, max(1, batch_bytes // (8 * max(1, pixels))))
    return rows - rows % ROW_MULTIPLE if rows > ROW_MULTIPLE else rows


def pixels_of(source: Any) -> int:
    """C*H*W of one image of `source` (a tensor, or an object with an `image_shape`)."""
    shape = getattr(source, "image_shape", None) or tuple(source.shape[1:])
    out = 1
    for side in shape:
        out *= int(side)
    return out


def as_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W) or (B, C, H, W) -> float32 (B, C, H, W) in [0, 1], on the CPU; float
    images pass unchanged (channel added to (B, H, W))."""
    images = images.cpu()
    images = images if images.dim() == 4 else images.unsqueeze(1)
    # In place: one float copy of the batch, not two (the same values as `/ 255.0`).
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images


def batches(source: Any, size: int | None = None) -> Iterator[torch.Tensor]:
    """The images of `source` in order, `size` at a time (default `rows_per_batch`), as stored
    (uint8 stays uint8)."""
    size = size or rows_per_batch(pixels_of(source))
    if hasattr(source, "batches"):
        yield from source.batches(size)
        return
    for start in range(0, len(source), size):
        yield source[start : start + size]


def float_batches(source: Any, size: int | None = None) -> Iterator[torch.Tensor]:
    """float32 (B, C, H, W) batches in [0, 1] of `source`, in order."""
    for batch in batches(source, size):
        yield as_float(batch)


class Gather:
    """Per-image results (B, ...) of successive batches, written in order into one (N, ...)
    tensor allocated at the first batch: what `torch.cat` of the parts would give, bit for bit.

    Why not a list of parts: each part is a small allocation made while the batch's large
    temporaries are live. Freed, those temporaries leave holes in glibc's heap that the parts
    now split, so the next batch's temporaries do not fit and the heap grows by about a
    megabyte a batch: 570 MB over 300 batches of 64x64 RGB, a peak that grows with the number
    of images. One tensor for the results keeps the heap at one batch's temporaries."""

    def __init__(self, total: int) -> None:
        self.total, self.filled = total, 0
        self.out: torch.Tensor | None = None

    def add(self, part: torch.Tensor) -> None:
        part = part.detach()
        if self.out is None:
            self.out = torch.empty((self.total, *part.shape[1:]), dtype=part.dtype, device=part.device)
        if self.filled + len(part) > self.total:
            raise ValueError(f"more than the {self.total} rows expected")
        self.out[self.filled : self.filled + len(part)] = part
        self.filled += len(part)

    def result(self, empty: torch.Tensor | None = None) -> torch.Tensor:
        """The (N, ...) results; `empty` (default float32 zeros) when there were no rows."""
        if self.out is None:
            return torch.zeros(0) if empty is None else empty
        if self.filled != self.total:
            raise ValueError(f"{self.filled} rows gathered, {self.total} expected")
        return self.out


@torch.no_grad()
def per_image(
    fn: Callable[[torch.Tensor], torch.Tensor], source: Any, size: int | None = None
) -> torch.Tensor:
    """`fn` of each float batch (B, C, H, W) -> (B, ...), concatenated over `source`: (N, ...).

    What replaces `fn(to_float(images))` on a whole split: the result is per image (codes,
    scores), the floats exist one batch at a time."""
    gathered = Gather(len(source))
    for x in float_batches(source, size):
        gathered.add(fn(x))
    return gathered.result()


def take(images: torch.Tensor, index: Any) -> torch.Tensor:
    """float32 (k, C, H, W) in [0, 1] of the rows `index` of uint8 `images`: what a figure draws
    (only those rows are read from a memory map)."""
    return as_float(images[torch.as_tensor(index, dtype=torch.long)])


class Rows:
    """The rows `index` of uint8 `images`, read batch by batch (a boolean or integer index):
    `images[index]` without copying the selection into memory at once."""

    def __init__(self, images: torch.Tensor, index: torch.Tensor) -> None:
        index = torch.as_tensor(index)
        self.images = images
        self.index = index.nonzero().flatten() if index.dtype == torch.bool else index.long()
        self.image_shape = tuple(images.shape[1:])

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, rows: slice) -> torch.Tensor:
        return self.images[self.index[rows]]
