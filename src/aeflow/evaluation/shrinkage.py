"""Ledoit-Wolf's shrinkage coefficient, computed as scikit-learn 1.9's `ledoit_wolf_shrinkage`
computes it, operation for operation, so the value is the same to the last bit.

Written out here because importing scikit-learn costs the evaluate and package stages more
than a second each (it loads most of SciPy) for this one function, which they call once.
tests/unit/test_shrinkage.py checks the two agree bit for bit, blocked shapes included.
"""

from __future__ import annotations

import numpy as np

BLOCK = 1000  # scikit-learn's default block_size: features are multiplied in blocks of this many


def ledoit_wolf_shrinkage(x: np.ndarray, block: int = BLOCK, overwrite: bool = False) -> float:
    """The shrinkage in [0, 1] of Ledoit-Wolf's estimate for the float64 samples `x` (N, D).

    `overwrite`: `x` (float64) may be used as working memory (it is centred, then squared, in
    place): one (N, D) array instead of three, for a fit over every training code. The value is
    the same: each of the two sums takes its blocks in scikit-learn's order, only no longer
    interleaved with the other's."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"samples of shape {x.shape}: expected (N, D)")
    if x.shape[1] == 1:  # one feature: the result is the same whatever the shrinkage
        return 0.0
    n, p = x.shape
    mean = x.mean(0)
    if overwrite:
        x -= mean
    else:
        x = x - mean
    edge = block * (p // block)
    blocks = [slice(block * i, block * (i + 1)) for i in range(p // block)]
    # The blocks in scikit-learn's order: full x full and full x edge by row, then edge x full,
    # then edge x edge. delta_ sums <X.T, X>'s coefficients squared; beta_ those of <X2.T, X2>.
    pairs = [(rows, cols) for rows in blocks for cols in [*blocks, slice(edge, None)]]
    pairs += [(slice(edge, None), cols) for cols in blocks] + [(slice(edge, None), slice(edge, None))]
    delta_ = 0.0
    for rows, cols in pairs:
        delta_ += np.sum(np.dot(x.T[rows], x[:, cols]) ** 2)
    x2 = np.multiply(x, x, out=x) if overwrite else x**2
    beta_ = 0.0
    for rows, cols in pairs:
        beta_ += np.sum(np.dot(x2.T[rows], x2[:, cols]))
    trace = np.sum(x2, axis=0) / n
    mu = np.sum(trace) / p
    delta_ /= n**2
    beta = 1.0 / (p * n) * (beta_ / n - delta_)
    delta = (delta_ - 2.0 * mu * trace.sum() + p * mu**2) / p
    beta = min(beta, delta)  # never shrink past 1
    return 0.0 if beta == 0 else float(beta / delta)
