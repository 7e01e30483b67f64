"""The report's anomaly-detection part: AUROC table, score histograms (normal vs. outside),
ROC curves and the most and least anomalous test images, from the evaluate stage's
`anomaly` metrics and details (aeflow.evaluation.protocols)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from aeflow.evaluation import anomaly as A  # noqa: E402
from aeflow.evaluation.streaming import take  # noqa: E402
from aeflow.reporting.elements import Figure, Table, fmt  # noqa: E402
from aeflow.reporting.figures import image_grid, save_figure  # noqa: E402

HISTOGRAMS = "anomaly_histograms.png"
ROC = "anomaly_roc.png"
EXTREMES = "anomaly_extremes.png"
PROTOCOL_NAMES = {A.SHIFT: "shifted copy", A.OOD: "other data set", A.OTHER_CLASSES: "other classes"}


def _sets(metrics: Mapping) -> list[tuple[str, str]]:
    """(protocol, set) pairs in report order: other data sets and classes first, then shifts."""
    order = (A.OOD, A.OTHER_CLASSES, A.SHIFT)
    return [(p, name) for p in order for name in metrics.get(p, {})]


def auroc_table(metrics: Mapping) -> Table:
    """One row per outside set: the AUROC of every score (* marks the autoencoder's best), PCA last,
    and the false-positive rate at 95% TPR of the best."""
    scores = list(A.SCORES)
    rows = []
    for protocol, name in _sets(metrics):
        scored = metrics[protocol][name]
        best, _ = A.best_score(metrics, protocol, name)
        cells = [fmt(scored[s][A.AUROC], 3) + (" *" if s == best else "") for s in scores]
        rows.append([f"{PROTOCOL_NAMES[protocol]}: {name}", *cells, fmt(scored[best][A.FPR95], 3)])
    header = ["outside images", *(f"AUROC {A.SCORE_LABELS[s]}" for s in scores), "FPR95 of *"]
    return Table(header, rows)


def threshold_text(metrics: Mapping, served: str) -> str:
    q = metrics.get(A.QUANTILE)
    flagged = metrics.get(A.FLAGGED_TEST, {}).get(served)
    return (
        f"Each score separates the clean test images from outside images; AUROC 0.5 is chance, 1 is "
        f"perfect (* the best autoencoder score; PCA with the same code size is the baseline). The "
        f"served model flags an image when its {A.SCORE_LABELS[served]} is above the {q} quantile of the "
        f"validation images' scores ({fmt(metrics.get(A.THRESHOLD, {}).get(served))}); "
        f"{fmt(100 * flagged if flagged is not None else None, 3)}% of the clean test images are above it."
    )


def histograms(details: Mapping, path: Path) -> Path:
    """One row per outside set, one column per score: counts of normal and outside scores."""
    sets = list(details["histograms"])
    scores = list(details["histograms"][sets[0]])
    fig, axes = plt.subplots(
        len(sets), len(scores), figsize=(3 * len(scores), 1.8 * len(sets)), squeeze=False
    )
    for r, where in enumerate(sets):
        for c, score in enumerate(scores):
            h, ax = details["histograms"][where][score], axes[r, c]
            edges = h["edges"]
            for key, colour in (("normal", "tab:blue"), ("anomalous", "tab:red")):
                ax.stairs(h[key], edges, fill=True, alpha=0.45, color=colour, label=key)
            ax.set_yticks([])
            ax.tick_params(labelsize=7)
            if r == 0:
                ax.set_title(A.SCORE_LABELS[score], fontsize=8)
        axes[r, 0].set_ylabel(where, rotation=0, ha="right", va="center", fontsize=8)
    axes[0, -1].legend(["test images", "outside images"], fontsize=7, loc="upper right")
    # Fixed spacing: the panels have no y ticks and equal tick labels, and `tight_layout`
    # measured every one of them (a third of this figure's time); savefig trims the margins.
    fig.subplots_adjust(wspace=0.1, hspace=0.5)
    return save_figure(fig, path)


def roc_curves(details: Mapping, metrics: Mapping, path: Path) -> Path:
    """One panel per score: the ROC curve of every outside set, AUROC in the legend."""
    sets = list(details["roc"])
    scores = list(details["roc"][sets[0]])
    fig, axes = plt.subplots(1, len(scores), figsize=(3.6 * len(scores), 3.6), squeeze=False)
    for c, score in enumerate(scores):
        ax = axes[0, c]
        for where in sets:
            protocol, name = where.split("/", 1)
            curve = details["roc"][where][score]
            auroc = metrics[protocol][name][score][A.AUROC]
            ax.plot(curve["fpr"], curve["tpr"], lw=1.2, label=f"{name} {auroc:.3f}")
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
        ax.set_title(A.SCORE_LABELS[score], fontsize=9)
        ax.set_xlabel("false-positive rate", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6, loc="lower right")
    axes[0, 0].set_ylabel("true-positive rate", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def extremes(images: torch.Tensor, details: Mapping, score: str, path: Path) -> Path:
    """The most (top row) and least (bottom row) anomalous test images by `score`; `images` as
    `draw` takes them (only the drawn ones are read)."""
    picks = details["extremes"][score]
    rows = {
        "most\nanomalous": take(images, picks["most"]),
        "least\nanomalous": take(images, picks["least"]),
    }
    return save_figure(image_grid(rows), path)


def draw(images: torch.Tensor, details: Mapping, metrics: Mapping, out: Path) -> list[Figure]:
    """The anomaly figures in report order; nothing if the details have no anomaly section.

    `images`: the test set, uint8 (N, H, W) or (N, C, H, W) as stored (a memory map is fine),
    or float (N, C, H, W) in [0, 1]; `details`/`metrics`: evaluate's `anomaly` sections.
    """
    if not details or not details.get("roc"):
        return []
    served = details.get("served_score", A.SQ_ERR)
    return [
        Figure(
            histograms(details, out / HISTOGRAMS),
            "Anomaly scores of the clean test images (blue) and of outside images (red), per outside set "
            "(rows) and score (columns); the axes span the 0.5th to 99.5th percentile of both.",
        ),
        Figure(
            roc_curves(details, metrics, out / ROC),
            "ROC curves: outside images are the positives; AUROC in the legend.",
        ),
        Figure(
            extremes(images, details, served, out / EXTREMES),
            f"The most and least anomalous clean test images by {A.SCORE_LABELS[served]} (the served score).",
        ),
    ]


def section(metrics: Mapping, details: Mapping) -> list[tuple[str, str, Table | None]]:
    """The report's "Anomaly detection" part: [(heading, text, table)], empty without anomaly metrics."""
    found = metrics.get(A.ANOMALY)
    if not found or not _sets(found):
        return []
    served = details.get(A.ANOMALY, {}).get("served_score", A.SQ_ERR)
    return [("Anomaly detection", threshold_text(found, served), auroc_table(found))]
