"""PCA as a linear autoencoder: the baseline every model is compared with.

`fit_images` fits it on a uint8 split by the cheapest method that is exact enough
(`choose_method`, the rule in one place):
- `exact`: the eigendecomposition of the covariance of the whole split held as float64
  (N x D x 8 bytes, at most `EXACT_MAX_BYTES`; MNIST's 55,000 x 784 are 345 MB);
- `covariance`: the same eigendecomposition, the D x D covariance summed batch by batch
  (D at most `EXACT_MAX_FEATURES`: a 128 MiB matrix); exact up to the order of the sums;
- `randomized`: for more pixels (64x64 RGB: D = 12,288, whose covariance alone is 1.2 GB;
  256x256 RGB: 309 GB), randomized subspace iteration (Halko, Martinsson & Tropp, 2011,
  algorithms 4.4 and 5.3) on the covariance, which it never forms: each pass over the split
  multiplies a D x (k + `OVERSAMPLE`) matrix by the covariance batch by batch. Memory is that
  matrix and one batch, whatever N and D; time is `ITERATIONS` + 3 passes over the split.
  Its captured variance and reconstruction error against the exact fit are measured in
  benchmarks/pca_methods.py (results/pca_methods.json).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from aeflow.evaluation.streaming import batches, pixels_of, rows_per_batch
from aeflow.io import atomic_path

log = logging.getLogger(__name__)

EXACT, COVARIANCE, RANDOMIZED, AUTO = "exact", "covariance", "randomized", "auto"
METHODS = (AUTO, EXACT, COVARIANCE, RANDOMIZED)
EXACT_MAX_BYTES = 512 * 2**20  # the whole split as float64
EXACT_MAX_FEATURES = 4096  # D: a D x D float64 covariance of 128 MiB and a seconds-long eigh
OVERSAMPLE = 10  # extra random directions beyond the k wanted (Halko et al.'s p)
ITERATIONS = 3  # power iterations (passes over the split) sharpening the subspace


@contextmanager
def one_thread() -> Iterator[None]:
    """torch on one CPU thread inside the block.

    LAPACK's threaded eigh on a small matrix spends its time synchronising its
    threads: on this project's 2-core CPU a 128x128 eigh took 1.8 s on two threads
    and 1 ms on one (784x784: 6.8 s against 0.16 s).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class PCA:
    """Principal components of flattened images, fitted exactly (eigh of the covariance).

    `encode`: (N, ...) -> (N, k) coordinates; `decode`: (N, k) -> (N, D) images.
    """

    def __init__(self, n_components: int) -> None:
        self.k = n_components

    def fit(self, x: torch.Tensor) -> PCA:
        """The exact fit on float images `x` (N, ...) held in memory."""
        x = x.flatten(1).double()  # (N, D)
        self._check(x.shape[1])
        self.mean = x.mean(0)
        centred = x - self.mean
        return self._from_covariance(centred.T @ centred / (len(x) - 1))  # (D, D)

    def _check(self, features: int) -> None:
        if not 1 <= self.k <= features:
            raise ValueError(f"n_components={self.k}: must be between 1 and {features}")

    def _from_covariance(self, cov: torch.Tensor) -> PCA:
        with one_thread():
            eigvals, eigvecs = torch.linalg.eigh(cov)  # ascending
        self.components = eigvecs.flip(1)[:, : self.k]  # (D, k)
        self.explained_variance = eigvals.flip(0)[: self.k]
        return self._fix_signs()

    def _fix_signs(self) -> PCA:
        # An eigenvector's sign is arbitrary; fix it so plots are reproducible.
        signs = torch.sign(self.components[self.components.abs().argmax(0), range(self.k)])
        self.components *= signs
        return self

    def first(self, n: int) -> PCA:
        """The PCA made of this one's first `n` components (no refit)."""
        if not 1 <= n <= self.k:
            raise ValueError(f"n={n}: must be between 1 and {self.k}")
        out = PCA(n)
        out.mean, out.components = self.mean, self.components[:, :n]
        out.explained_variance = self.explained_variance[:n]
        return out

    def write(self, path: str | os.PathLike) -> None:
        """The fit as an .npz file (float64 arrays), written atomically."""
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(
                fh,
                mean=self.mean.numpy(),
                components=self.components.numpy(),
                explained_variance=self.explained_variance.numpy(),
            )

    @classmethod
    def load(cls, path: str | os.PathLike) -> PCA:
        """The fit `write` wrote."""
        with np.load(path, allow_pickle=False) as data:
            out = cls(int(data["components"].shape[1]))
            out.mean, out.components, out.explained_variance = (
                torch.from_numpy(data[key]) for key in ("mean", "components", "explained_variance")
            )
        return out

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return (x.flatten(1).double() - self.mean) @ self.components

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z.double() @ self.components.T + self.mean


def choose_method(n_images: int, features: int) -> str:
    """The method `fit_images` uses for `n_images` images of `features` pixels (C*H*W)."""
    if features > EXACT_MAX_FEATURES:
        return RANDOMIZED
    return EXACT if n_images * features * 8 <= EXACT_MAX_BYTES else COVARIANCE


def fit_images(
    images: Any,
    n_components: int,
    method: str = AUTO,
    seed: int = 0,
    iterations: int = ITERATIONS,
    batch: int | None = None,
) -> PCA:
    """PCA of uint8 images (N, H, W) or (N, C, H, W) (a memory map is read batch by batch),
    pixels scaled to [0, 1]; `method` one of `METHODS` (auto: `choose_method`); `seed` draws
    the randomized method's starting directions."""
    if method not in METHODS:
        raise ValueError(f"method={method!r}: allowed: {', '.join(METHODS)}")
    features = pixels_of(images)
    chosen = choose_method(len(images), features) if method == AUTO else method
    log.info("PCA of %d images of %d pixels, %d components: %s", len(images), features, n_components, chosen)
    if chosen == EXACT:
        return PCA(n_components).fit(images[:].double() / 255.0)
    pca = PCA(n_components)
    pca._check(features)
    if len(images) < 2:
        raise ValueError(f"{len(images)} images: need at least 2 to fit a PCA")
    batch = batch or rows_per_batch(features)
    pca.mean = pixel_mean(images, batch)
    if chosen == COVARIANCE:
        return pca._from_covariance(_covariance_times(images, pca.mean, None, batch))
    return _randomized(pca, images, seed, iterations, batch)


def pixel_mean(images: Any, batch: int | None = None) -> torch.Tensor:
    """(D,) float64 mean pixel in [0, 1]: uint8 sums in int64 are exact, whatever the order."""
    total = None
    for x in batches(images, batch):
        part = x.flatten(1).sum(0, dtype=torch.int64)
        total = part if total is None else total + part
    return total.double() / (255.0 * len(images))


def _covariance_times(
    images: Any, mean: torch.Tensor, right: torch.Tensor | None, batch: int, dtype=torch.float64
) -> torch.Tensor:
    """C @ `right` (D, l) for the images' covariance C = X_c^T X_c / (N - 1) without forming C
    (or C itself when `right` is None): products of each batch in `dtype`, summed in float64."""
    out = None
    mean, right = mean.to(dtype), None if right is None else right.to(dtype)
    for x in batches(images, batch):
        centred = x.flatten(1).to(dtype) / 255.0 - mean  # (B, D)
        part = (centred.T @ (centred if right is None else centred @ right)).double()  # (D, D) or (D, l)
        out = part if out is None else out.add_(part)
    return out / (len(images) - 1)


def _randomized(pca: PCA, images: Any, seed: int, iterations: int, batch: int) -> PCA:
    """Randomized subspace iteration on the covariance: Q spans C^(q+1) Omega, then the
    eigendecomposition of Q^T C Q (Rayleigh-Ritz) gives the components and their variances."""
    features = len(pca.mean)
    width = min(features, pca.k + OVERSAMPLE)
    gen = torch.Generator().manual_seed(seed)
    basis = torch.randn(features, width, generator=gen, dtype=torch.float64)  # (D, l)
    # float32 products run twice as fast as float64 and the method's own error is far larger
    # than their rounding; the sums over batches stay float64.
    for _ in range(iterations + 1):
        # Orthonormalising between passes keeps the directions of small variance from
        # being swamped in floating point by the largest.
        basis = torch.linalg.qr(_covariance_times(images, pca.mean, basis, batch, torch.float32)).Q
    projected = basis.T @ _covariance_times(images, pca.mean, basis, batch, torch.float32)  # (l, l)
    with one_thread():
        eigvals, eigvecs = torch.linalg.eigh((projected + projected.T) / 2)  # ascending
    pca.components = basis @ eigvecs.flip(1)[:, : pca.k]  # (D, k)
    pca.explained_variance = eigvals.flip(0)[: pca.k]
    return pca._fix_signs()
