"""One-class (or few-class) training: keep only some labels in a split.

`data.classes=[3]` trains on the 3s alone; the test split stays whole, so the
evaluate stage can score the other classes as anomalies (Ruff et al., 2018).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from aeflow.errors import ConfigError

Split = tuple[torch.Tensor, torch.Tensor]  # images uint8 (N, H, W), labels int64 (N,)


def check_classes(classes: object) -> list[int] | None:
    """`data.classes` as a list of distinct labels, or None (every class); anything else is refused."""
    if classes is None:
        return None
    if (
        isinstance(classes, (str, bytes))
        or not isinstance(classes, Sequence)
        or not classes
        or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in classes)
        or len(set(classes)) != len(classes)
    ):
        raise ConfigError(
            f"data.classes={classes!r}: expected a non-empty list of distinct labels, "
            "e.g. [3], or null for all"
        )
    return list(classes)


def class_mask(labels: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
    """(N,) bool: which labels are among `classes`."""
    return torch.isin(labels, torch.as_tensor(list(classes), dtype=labels.dtype, device=labels.device))


def keep_classes(split: Split, classes: Sequence[int] | None, name: str = "split") -> Split:
    """The images and labels of `split` whose label is in `classes` (all if None), in order."""
    classes = check_classes(classes)
    if classes is None:
        return split
    images, labels = split
    keep = class_mask(labels, classes)
    if not keep.any():
        present = sorted(int(c) for c in labels.unique())
        raise ConfigError(
            f"data.classes={classes}: no {name} image has these labels; labels present: {present}"
        )
    return images[keep], labels[keep]
