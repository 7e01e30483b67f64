"""Ledoit-Wolf's shrinkage coefficient, computed as scikit-learn 1.9's `ledoit_wolf_shrinkage`
computes it, operation for operation, so the value is the same to the last bit.

Written out here because importing scikit-learn costs the evaluate and package stages more
than a second each (it loads most of SciPy) for this one function, which they call once.
tests/unit/test_shrinkage.py checks the two agree bit for bit, blocked shapes included.
"""

from __future__ import annotations

import numpy as np

BLOCK = 1000  # scikit-learn's default block_size: features are multiplied in blocks of this many


def ledoit_wolf_shrinkage(x: np.ndarray, block: int = BLOCK) -> float:
    """The shrinkage in [0, 1] of Ledoit-Wolf's estimate for the float64 samples `x` (N, D)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"samples of shape {x.shape}: expected (N, D)")
    if x.shape[1] == 1:  # one feature: the result is the same whatever the shrinkage
        return 0.0
    n, p = x.shape
    x = x - x.mean(0)
    x2 = x**2
    trace = np.sum(x2, axis=0) / n
    mu = np.sum(trace) / p
    edge = block * (p // block)
    blocks = [slice(block * i, block * (i + 1)) for i in range(p // block)]
    beta_, delta_ = 0.0, 0.0  # sums of <X2.T, X2>'s coefficients and of <X.T, X>'s squared
    # The blocks in scikit-learn's order: full x full and full x edge by row, then edge x full.
    for rows in blocks:
        for cols in blocks:
            beta_ += np.sum(np.dot(x2.T[rows], x2[:, cols]))
            delta_ += np.sum(np.dot(x.T[rows], x[:, cols]) ** 2)
        beta_ += np.sum(np.dot(x2.T[rows], x2[:, edge:]))
        delta_ += np.sum(np.dot(x.T[rows], x[:, edge:]) ** 2)
    for cols in blocks:
        beta_ += np.sum(np.dot(x2.T[edge:], x2[:, cols]))
        delta_ += np.sum(np.dot(x.T[edge:], x[:, cols]) ** 2)
    delta_ += np.sum(np.dot(x.T[edge:], x[:, edge:]) ** 2)
    delta_ /= n**2
    beta_ += np.sum(np.dot(x2.T[edge:], x2[:, edge:]))
    beta = 1.0 / (p * n) * (beta_ / n - delta_)
    delta = (delta_ - 2.0 * mu * trace.sum() + p * mu**2) / p
    beta = min(beta, delta)  # never shrink past 1
    return 0.0 if beta == 0 else float(beta / delta)
