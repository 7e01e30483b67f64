"""PCA as a linear autoencoder: the baseline every model is compared with."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

from aeflow.io import atomic_path


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
        x = x.flatten(1).double()  # (N, D)
        if not 1 <= self.k <= x.shape[1]:
            raise ValueError(f"n_components={self.k}: must be between 1 and {x.shape[1]}")
        self.mean = x.mean(0)
        centred = x - self.mean
        cov = centred.T @ centred / (len(x) - 1)  # (D, D)
        with one_thread():
            eigvals, eigvecs = torch.linalg.eigh(cov)  # ascending
        self.components = eigvecs.flip(1)[:, : self.k]  # (D, k)
        self.explained_variance = eigvals.flip(0)[: self.k]
        # eigh's sign per vector is arbitrary; fix it so plots are reproducible.
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
