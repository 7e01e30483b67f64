"""The pictures people look for: reconstructions, the worst ones, 2-D code maps, walks
through code space, per-digit errors and loss curves; `draw_all` draws the report's set,
each with its caption."""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from aeflow.config.schema import VisualizeConfig  # noqa: E402
from aeflow.data.folder import has_labels  # noqa: E402
from aeflow.evaluation.metrics import LABELS, SQ_ERR  # noqa: E402
from aeflow.evaluation.pca import PCA  # noqa: E402
from aeflow.evaluation.scoring import MODEL, NAMES  # noqa: E402
from aeflow.evaluation.streaming import per_image, take  # noqa: E402
from aeflow.io import atomic_path  # noqa: E402
from aeflow.reporting.elements import Figure  # noqa: E402

RECONSTRUCTIONS = "reconstructions.png"
CODES_2D = "codes_2d.png"
LOSS = "loss.png"
WORST = "worst.png"
INTERPOLATION = "interpolation.png"
PER_DIGIT = "per_digit.png"


def save_figure(fig: plt.Figure, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def show(ax: plt.Axes, image: torch.Tensor) -> None:
    """One CPU image in [0, 1] (a `strip`) on `ax`: (3, H, W) in colour, (1, H, W) in grey."""
    if image.shape[0] == 3:
        ax.imshow(image.permute(1, 2, 0).numpy())  # (H, W, 3), as imshow takes colour
    else:
        ax.imshow(image[0].numpy(), cmap="gray", vmin=0, vmax=1)


TILE_GAP = 2  # white pixels between the images of a grid row


def strip(row: torch.Tensor, n: int, channels: int) -> torch.Tensor:
    """Images (k <= n, C, H, W) or (k, H, W) side by side as one (channels, H, n*W + gaps) image;
    white gaps, white where a row has fewer than `n` images; grey images repeated to `channels`."""
    row = row.detach().float().clamp(0, 1).cpu()
    row = row.unsqueeze(1) if row.dim() == 3 else row
    k, _, h, w = row.shape
    out = torch.ones(channels, h, n * w + (n - 1) * TILE_GAP)
    for c in range(k):
        x = c * (w + TILE_GAP)
        out[:, :, x : x + w] = row[c].expand(channels, h, w)
    return out


def one_per_class(labels: torch.Tensor, per_class: int = 1) -> torch.Tensor:
    """Indices of the first `per_class` examples of each label, ordered by label."""
    picks = [torch.nonzero(labels == c).flatten()[:per_class] for c in labels.unique().sort().values]
    return torch.cat(picks)


@torch.no_grad()
def reconstructions(images: torch.Tensor, model: torch.nn.Module, pca: PCA, path: Path) -> Path:
    """Originals above model and PCA reconstructions; images (N, C, H, W) in [0, 1]."""
    rows = {
        "original": images,
        "autoencoder": model(images),
        f"PCA ({pca.k})": pca.decode(pca.encode(images)).view_as(images),
    }
    return save_figure(image_grid(rows), path)


def image_grid(
    rows: dict[str, torch.Tensor], titles: list[str] | None = None, size: float = 0.9
) -> plt.Figure:
    """One row of images per entry (each (n, C, H, W) or (n, H, W); clamped to [0, 1]), labelled on the left.

    Each row is one picture of its images side by side: a matplotlib Axes per
    image cost more than all the rest of the report (about 30 ms each to make
    and to save, hundreds of them).
    """
    n = max(len(r) for r in rows.values())
    channels = 3 if any(r.dim() == 4 and r.shape[1] == 3 for r in rows.values()) else 1
    fig, axes = plt.subplots(len(rows), 1, figsize=(n * size, len(rows) * size * 1.1), squeeze=False)
    for (name, row), ax in zip(rows.items(), axes[:, 0]):
        show(ax, strip(row, n, channels))
        ax.set_xticks([])
        ax.set_yticks([])
        ax.spines[:].set_visible(False)
        ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    if titles:
        width = (rows[next(iter(rows))].shape[-1]) + TILE_GAP
        for c, title in enumerate(titles[:n]):
            axes[0, 0].text(
                c * width + (width - TILE_GAP) / 2, -1, title, ha="center", va="bottom", fontsize=7
            )
    return fig


@torch.no_grad()
def worst_reconstructed(images: torch.Tensor, model: torch.nn.Module, worst: list[dict], path: Path) -> Path:
    """The worst-reconstructed test images (originals above reconstructions), error in the titles.

    `worst`: evaluate's list of {index, digit (absent without labels), sq_err_per_image}, and
    `row`: the image's row in `images` (N, C, H, W) when that is not `index` (only the worst
    images passed).
    """
    idx = torch.tensor([w.get("row", w["index"]) for w in worst], dtype=torch.long)
    picked = images[idx]
    titles = [
        f"#{w['index']}" + (f" ({w['digit']})" if "digit" in w else "") + f"\n{w['sq_err_per_image']:.1f}"
        for w in worst
    ]
    fig = image_grid({"original": picked, "autoencoder": model(picked)}, titles)
    return save_figure(fig, path)


def interpolation_pairs(labels: torch.Tensor, n_pairs: int) -> list[tuple[int, int]]:
    """Test-image index pairs of different classes: (0, 5), (1, 6), ... for 10 classes.

    Pair p joins class a = p mod m with class (a + m // 2) mod m (m classes),
    using the (p // m)-th image of each class so that later pairs are new images.
    Without two classes (unlabelled images: labels -1) pair p is test images 2p and 2p + 1.
    """
    classes = labels.unique().sort().values.tolist()
    m = len(classes)
    if m < 2:
        return [(2 * p, 2 * p + 1) for p in range(min(n_pairs, len(labels) // 2))]
    members = {c: torch.nonzero(labels == c).flatten() for c in classes}
    pairs = []
    for p in range(n_pairs):
        a = p % m
        b = (a + max(m // 2, 1)) % m
        ia, ib = members[classes[a]], members[classes[b]]
        pairs.append((int(ia[(p // m) % len(ia)]), int(ib[(p // m) % len(ib)])))
    return pairs


@torch.no_grad()
def interpolation(
    images: torch.Tensor,
    labels: torch.Tensor,
    model: torch.nn.Module,
    pairs: list[tuple[int, int]],
    steps: int,
    path: Path,
    names: list[tuple[int, int]] | None = None,
) -> Path:
    """Decoded images along the straight line between the codes of two test images, one row per
    pair of rows of `images` (and `labels`); `names`: the pairs' test indices, when the rows
    are not those (only the paired images passed)."""
    alphas = torch.linspace(0, 1, steps)
    rows = {}
    for (i, j), (ti, tj) in zip(pairs, names or pairs):
        z = model.encode(images[[i, j]])
        line = torch.stack([(1 - a) * z[0] + a * z[1] for a in alphas])
        # Unlabelled images (labels -1) are named by their test index instead of their class.
        name = f"#{ti} → #{tj}" if labels[i] < 0 else f"{int(labels[i])} → {int(labels[j])}"
        rows[name] = model.decode(line)
    titles = [f"{a:.2f}" for a in alphas.tolist()]
    return save_figure(image_grid(rows, titles), path)


def per_digit_bars(
    by_digit: dict[str, dict[str, dict[str, float]]],
    key: str,
    path: Path,
    names: dict[str, str] | None = None,
    ylabel: str | None = None,
    noun: str = "digit",
) -> Path:
    """Grouped bars of metric `key` per digit, one bar per scorer (by_digit[scorer][digit][key]),
    scorers in the order of `names` (their display names)."""
    order = list(names or {})
    scorers = sorted(by_digit, key=lambda s: order.index(s) if s in order else len(order))
    digits = sorted(by_digit[scorers[0]], key=int)
    width = 0.8 / len(scorers)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for s, scorer in enumerate(scorers):
        values = [by_digit[scorer][d][key] for d in digits]
        ax.bar(
            [i + (s - (len(scorers) - 1) / 2) * width for i in range(len(digits))],
            values,
            width,
            label=(names or {}).get(scorer, scorer),
        )
    ax.set_xticks(range(len(digits)), digits)
    ax.set_xlabel(noun)
    ax.set_ylabel(ylabel or key.replace("_", " "))
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def to_2d(codes: torch.Tensor) -> tuple[torch.Tensor, str]:
    """Codes as 2-D points: themselves if 2-D, else their first two principal components."""
    if codes.shape[1] == 2:
        return codes.double(), "code units 1 and 2"
    return PCA(2).fit(codes).encode(codes), f"first 2 principal components of the {codes.shape[1]}-D codes"


@torch.no_grad()
def code_maps(
    images: torch.Tensor, labels: torch.Tensor, model, pixel_pca: PCA, path: Path, noun: str = "digit"
) -> Path:
    """2-D map of test codes coloured by `noun` (their label), the autoencoder beside PCA on pixels;
    one colour for unlabelled images (labels -1). `images`: uint8 as stored (a memory map is read
    and made float one batch at a time: at 256x256 RGB, 5,000 images are 3.9 GB of float32), or
    float in [0, 1]."""
    labelled = has_labels(labels)
    points, how = to_2d(per_image(model.encode, images))
    panels = [
        (f"autoencoder: {how}", points),
        ("PCA of pixels: components 1 and 2", per_image(lambda x: pixel_pca.encode(x)[:, :2], images)),
    ]
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.5))
    for ax, (title, pts) in zip(axes, panels):
        pts = pts.cpu().numpy()
        colour = {"c": labels.cpu().numpy(), "cmap": "tab10"} if labelled else {"color": "tab:blue"}
        scatter = ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.7, **colour)
        ax.set_title(title, fontsize=10)
    if labelled:
        fig.colorbar(scatter, ax=axes, ticks=range(10), label=noun)
    return save_figure(fig, path)


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
    return save_figure(fig, path)


def draw_all(
    model: torch.nn.Module,
    pca: PCA,
    images: torch.Tensor,
    labels: torch.Tensor,
    details: Mapping,
    loss_rows: list[dict[str, float]],
    latent_dim: int,
    knobs: VisualizeConfig,
    out: Path,
    noun: str = "digit",
) -> list[Figure]:
    """Every figure of the report, in report order, drawn into folder `out`.

    `images`: the test set, uint8 (N, H, W) or (N, C, H, W) as stored (a memory map: only the
    drawn images are read and made float; every figure draws a fixed number of images, at most
    `knobs.map_points` for the code maps), or float (N, C, H, W) in [0, 1]; `labels`: its labels
    (-1: unlabelled images, which get no per-label figures); `pca`: the evaluate stage's fit
    (at least 2 components); `details`: evaluate's details (worst images, per-label tables);
    `loss_rows`: the loss curve's rows; `noun`: what a label is called in the captions ("digit", "class").
    """
    labelled = has_labels(labels)
    pick = one_per_class(labels, per_class=2) if labelled else torch.arange(min(len(labels), 10))
    n_map = knobs.map_points
    pairs = interpolation_pairs(labels, knobs.interpolation_pairs)
    shown = min(n_map, len(images))
    # Only the images a figure draws, made float: the worst, the map's first `n_map`, the pairs.
    worst = [w["index"] for w in details["worst"]]
    ends = sorted({i for pair in pairs for i in pair})
    drawn = {i: k for k, i in enumerate(ends)}
    by_label = (
        f"coloured by {noun}"
        if labelled
        else "in one colour (the images have no labels: no class subfolders)"
    )
    figures = [
        Figure(
            reconstructions(take(images, pick), model, pca.first(latent_dim), out / RECONSTRUCTIONS),
            "Test images (top), their autoencoder reconstructions and PCA reconstructions with the "
            f"same code size{f', two per {noun}' if labelled else ''}.",
        ),
        Figure(
            worst_reconstructed(
                take(images, worst),
                model,
                [{**w, "row": k} for k, w in enumerate(details["worst"])],
                out / WORST,
            ),
            "The worst-reconstructed test images: original above reconstruction; title: test index, "
            f"{f'{noun} ' if labelled else ''}and squared error.",
        ),
        Figure(
            code_maps(images[:shown], labels[:n_map], model, pca.first(2), out / CODES_2D, noun),
            f"Codes of {shown} test images {by_label}: the autoencoder "
            "(projection in the panel title) beside PCA of the pixels.",
        ),
        Figure(
            interpolation(
                take(images, ends),
                labels[ends],
                model,
                [(drawn[i], drawn[j]) for i, j in pairs],
                knobs.interpolation_steps,
                out / INTERPOLATION,
                names=[(i, j) for i, j in pairs],
            ),
            "A walk through code space: decoded images along the straight line between the codes of "
            f"two test images {f'of different {noun}s' if labelled else '(by test index)'} "
            "(fraction of the way on top).",
        ),
    ]
    if labelled and details["by_digit"].get(MODEL):
        bars = per_digit_bars(details["by_digit"], SQ_ERR, out / PER_DIGIT, NAMES, LABELS[SQ_ERR][0], noun)
        figures.append(Figure(bars, f"Squared error per test image, by {noun}: autoencoder beside PCA."))
    loss = loss_curve(loss_rows, out / LOSS)
    return [*figures, Figure(loss, "Learning curves: training and validation loss per epoch.")]
