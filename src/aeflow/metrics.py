"""Reconstruction metrics. Images are (N, ...) tensors with pixels in [0, 1].

Metric names live here so the evaluate stage, the JSON file, MLflow and the
tests spell them once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SQ_ERR = "sq_err_per_image"
MSE = "mse"
BCE = "bce"
BY_DIGIT = "sq_err_per_image_by_digit"


def sq_err_per_image(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(N,) sum over the pixels of each image of the squared error, pixels in [0, 1].

    Averaged over images this is the figure of Hinton & Salakhutdinov (2006).
    """
    return (recon - target).pow(2).flatten(1).sum(1)


def bce_per_image(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(N,) mean binary cross-entropy per pixel; recon is clamped into (0, 1) first."""
    eps = 1e-7
    loss = F.binary_cross_entropy(recon.clamp(eps, 1 - eps), target, reduction="none")
    return loss.flatten(1).mean(1)


class ReconstructionMeter:
    """Accumulates per-image errors over batches; `summary()` gives the metrics dict."""

    def __init__(self) -> None:
        self.sq_err: list[torch.Tensor] = []
        self.bce: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []
        self.pixels = 0

    def update(self, recon: torch.Tensor, target: torch.Tensor, labels: torch.Tensor) -> None:
        recon, target = recon.detach().double().cpu(), target.detach().double().cpu()
        self.pixels = target[0].numel()
        self.sq_err.append(sq_err_per_image(recon, target))
        self.bce.append(bce_per_image(recon, target))
        self.labels.append(labels.cpu())

    def per_image(self) -> torch.Tensor:
        return torch.cat(self.sq_err)

    def summary(self) -> dict:
        sq, bce, labels = self.per_image(), torch.cat(self.bce), torch.cat(self.labels)
        by_digit = {str(int(c)): float(sq[labels == c].mean()) for c in labels.unique()}
        return {
            SQ_ERR: float(sq.mean()),
            MSE: float(sq.mean() / self.pixels),
            BCE: float(bce.mean()),
            BY_DIGIT: by_digit,
        }
