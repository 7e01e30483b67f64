"""The pictures people look for: reconstructions, 2-D code maps, loss curves."""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from aeflow.io import atomic_path  # noqa: E402
from aeflow.pca import PCA  # noqa: E402

RECONSTRUCTIONS = "reconstructions.png"
CODES_2D = "codes_2d.png"
LOSS = "loss.png"


def _save(fig: plt.Figure, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def one_per_class(labels: torch.Tensor, per_class: int = 1) -> torch.Tensor:
    """Indices of the first `per_class` examples of each label, ordered by label."""
    picks = [torch.nonzero(labels == c).flatten()[:per_class] for c in labels.unique().sort().values]
    return torch.cat(picks)


@torch.no_grad()
def reconstructions(images: torch.Tensor, model: torch.nn.Module, pca: PCA, path: Path) -> Path:
    """Originals above model and PCA reconstructions; images (N, 1, H, W) in [0, 1]."""
    rows = {
        "original": images,
        "autoencoder": model(images),
        f"PCA ({pca.k})": pca.decode(pca.encode(images)).view_as(images).clamp(0, 1),
    }
    n = len(images)
    fig, axes = plt.subplots(len(rows), n, figsize=(n * 0.9, len(rows) * 1.0))
    for r, (name, row) in enumerate(rows.items()):
        for c in range(n):
            ax = axes[r, c]
            ax.imshow(row[c].squeeze().cpu().numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    return _save(fig, path)


def to_2d(codes: torch.Tensor) -> tuple[torch.Tensor, str]:
    """Codes as 2-D points: themselves if 2-D, else their first two principal components."""
    if codes.shape[1] == 2:
        return codes.double(), "code units 1 and 2"
    return PCA(2).fit(codes).encode(codes), f"first 2 principal components of the {codes.shape[1]}-D codes"


@torch.no_grad()
def code_maps(images: torch.Tensor, labels: torch.Tensor, model, pixel_pca: PCA, path: Path) -> Path:
    """2-D map of test codes coloured by digit, the autoencoder beside PCA on pixels."""
    points, how = to_2d(model.encode(images))
    panels = [(f"autoencoder: {how}", points), ("PCA of pixels: components 1 and 2",
                                                   pixel_pca.encode(images)[:, :2])]
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.5))
    for ax, (title, pts) in zip(axes, panels):
        pts = pts.cpu().numpy()
        scatter = ax.scatter(pts[:, 0], pts[:, 1], c=labels.cpu().numpy(), cmap="tab10", s=2, alpha=0.7)
        ax.set_title(title, fontsize=10)
    fig.colorbar(scatter, ax=axes, ticks=range(10), label="digit")
    return _save(fig, path)


def read_loss_curve(path: str | Path) -> list[dict[str, float]]:
    with open(path, newline="") as fh:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(fh)]


def loss_curve(rows: list[dict[str, float]], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4))
    for key in ("train/loss", "val/loss"):
        pts = [(r["epoch"], r[key]) for r in rows if key in r]
        if pts:
            ax.plot(*zip(*pts), marker="o", label=key)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.legend()
    ax.grid(alpha=0.3)
    return _save(fig, path)
