"""The report of a `data=mvtec` run (docs/inspection.md): per-defect tables of the inspection
metrics, for each defect type its best and worst found test image, drawn as the image, the
reconstruction, and the anomaly map over the image, each with the ground-truth outline, and for
each method its image ROC, pixel ROC and PRO curve (the evaluate stage's details' `curves`,
aeflow.evaluation.pixel_metrics.PixelAccumulator.curves).

The images drawn are the evaluate stage's choice (its details' `extremes`): by the image score
of the model's first map kind, the highest (the clearest find) and the lowest (the worst miss).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aeflow.reporting.elements import Figure, Table, fmt
from aeflow.reporting.figures import plt, save_figure  # matplotlib with the headless backend

log = logging.getLogger(__name__)

INSPECTION = "inspection"  # aeflow.evaluation.inspection_stages.INSPECTION
COLUMNS = {
    "image_auroc": "image AUROC",
    "pixel_auroc": "pixel AUROC",
    "aupro": "AUPRO (FPR ≤ 0.3)",
    "image_f1_max": "image F1-max",
    "pixel_f1_max": "pixel F1-max",
}
NAMES = {"ae": "autoencoder", "pca": "PCA baseline"}
DRAWN = (("flagged", "best found"), ("missed", "worst missed"))


def method_name(method: str) -> str:
    """'ae_ssim' -> 'autoencoder, SSIM map'."""
    prefix, _, kind = method.partition("_")
    return f"{NAMES.get(prefix, prefix)}, {kind.upper()} map"


def per_defect_table(per_type: Mapping[str, Mapping[str, float]]) -> Table:
    """One method's metrics: a row per defect type, `all` first."""
    rows = [[kind, *(fmt(values.get(key)) for key in COLUMNS)] for kind, values in per_type.items()]
    return Table(["defect type", *COLUMNS.values()], rows)


def sections(metrics: Mapping, details: Mapping) -> list[tuple[str, str, Table | None]]:
    """(heading, paragraph, table): the per-defect tables of every method, the model's first."""
    counts = ", ".join(f"{kind} {n}" for kind, n in details.get("test_images", {}).items())
    intro = (
        f"Test images per type: {counts}. Each defect type's metrics use the good test images and "
        "that type's images; `all` uses every test image. Image metrics rank the image scores, "
        "pixel metrics the map values against the ground-truth masks; AUPRO weighs every defect "
        "region equally, up to a false-positive rate of 0.3."
    )
    out: list[tuple[str, str, Table | None]] = [("Inspection metrics per defect type", intro, None)]
    for method, per_type in metrics[INSPECTION].items():
        out.append((method_name(method), "", per_defect_table(per_type)))
    return out


def _outline(ax: Any, mask: Any) -> None:
    if mask.any():
        ax.contour(mask, levels=[0.5], colors="lime", linewidths=1.0)


def defect_figure(kind: str, rows: list[tuple[str, Any, Any, Any, Any, float]], path: Path) -> Path:
    """One row per drawn image: (title, image (C, H, W), reconstruction, map (H, W), mask (H, W), score)."""
    fig, axes = plt.subplots(len(rows), 3, figsize=(7.5, 2.6 * len(rows)), squeeze=False)
    for ax_row, (title, image, recon, amap, mask, score) in zip(axes, rows, strict=True):
        grey = image.shape[0] == 1
        for ax, picture, name in ((ax_row[0], image, "image"), (ax_row[1], recon, "reconstruction")):
            ax.imshow(picture[0] if grey else picture.permute(1, 2, 0), cmap="gray", vmin=0, vmax=1)
            ax.set_title(f"{title}: {name}" if name == "image" else name, fontsize=9)
        ax_row[2].imshow(image[0] if grey else image.permute(1, 2, 0), cmap="gray", vmin=0, vmax=1)
        ax_row[2].imshow(amap, cmap="inferno", alpha=0.55, vmin=0, vmax=max(float(amap.max()), 1e-6))
        ax_row[2].set_title(f"anomaly map (score {score:.3f})", fontsize=9)
        for ax in ax_row:
            _outline(ax, mask)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"{kind}: green outline = ground truth", fontsize=10)
    return save_figure(fig, path)


def draw(model: Any, splits: Any, details: Mapping, out: Path) -> list[Figure]:
    """A figure per defect type (see the module docstring) of the model's first map kind."""
    import torch

    from aeflow.evaluation.anomaly_maps import anomaly_map, reconstruction
    from aeflow.evaluation.inspection import MODEL, InspectionConfig
    from aeflow.evaluation.streaming import as_float

    config = InspectionConfig.from_mapping(details["settings"])
    settings = config.settings()[0]
    method = f"{MODEL}_{settings.kind}"
    images, _ = splits.splits["test"]
    masks = splits.test_masks()
    scores = details["scores"][method]
    figures = []
    for kind, picked in details["extremes"][method].items():
        if kind == details["types"][0]:  # good images have no defect to find
            continue
        rows = []
        for key, title in DRAWN:
            i = picked[key][0]
            x = as_float(images[i : i + 1])  # (1, C, H, W)
            with torch.no_grad():
                recon = reconstruction(model, x)
            amap = anomaly_map(x, recon, settings)[0]
            rows.append((title, x[0], recon[0], amap, masks[i].numpy(), scores[i]))
        path = defect_figure(kind, rows, out / f"inspection_{kind}.png")
        caption = (
            f"{kind}: the best found and the worst missed test image by the autoencoder's "
            f"{settings.kind.upper()} map (image, reconstruction, map over the image; "
            "green: the defect's mask)"
        )
        figures.append(Figure(path, caption))
    return figures


CURVES = (  # (key of the details' curves, title, x label, y label, metric shown)
    ("image_roc", "image ROC", "false-positive rate (good images)", "true-positive rate", "image_auroc"),
    ("pixel_roc", "pixel ROC", "false-positive rate (good pixels)", "true-positive rate", "pixel_auroc"),
    ("pro", "PRO curve", "false-positive rate (good pixels)", "mean region overlap", "aupro"),
)


def curve_figure(method: str, curves: Mapping[str, Any], values: Mapping[str, float], path: Path) -> Path:
    """One method's curves side by side, each titled with the metric it gives (all test images)."""
    from aeflow.evaluation.pixel_metrics import PRO_FPR_LIMIT

    fig, axes = plt.subplots(1, len(CURVES), figsize=(11, 3.8), layout="constrained")
    for ax, (key, title, xlabel, ylabel, metric) in zip(axes, CURVES, strict=True):
        xs, ys = curves[key]
        ax.plot(xs, ys, color="tab:blue")
        if key != "pro":
            ax.plot([0, 1], [0, 1], linestyle=":", color="grey", linewidth=0.8)  # chance
        ax.set_xlim(0, PRO_FPR_LIMIT if key == "pro" else 1)
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{title}: {COLUMNS[metric]} {fmt(values.get(metric))}", fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
    fig.suptitle(method_name(method), fontsize=10)
    return save_figure(fig, path)


def curve_figures(metrics: Mapping, details: Mapping, out: Path) -> list[Figure]:
    """A curve figure per method, for a details file that holds the curves (else none)."""
    from aeflow.evaluation.pixel_metrics import PRO_FPR_LIMIT

    curves = details.get("curves")
    if not curves:
        log.info("inspection details hold no curves: the report draws no ROC or PRO curves")
        return []
    figures = []
    for method, per_method in curves.items():
        path = curve_figure(
            method, per_method, metrics[INSPECTION][method]["all"], out / f"curves_{method}.png"
        )
        caption = (
            f"{method_name(method)}: image ROC, pixel ROC and the PRO curve up to a false-positive "
            f"rate of {PRO_FPR_LIMIT}, over all test images"
        )
        figures.append(Figure(path, caption))
    return figures


def from_config(cfg: Any) -> list[Path]:
    """The visualize stage for data=mvtec: figures and report written; the figure paths."""
    from aeflow.evaluation.inspection_stages import packed
    from aeflow.io import write_text
    from aeflow.models.weights import BEST, checkpoint_path, load_weights
    from aeflow.reporting.report import config_table, render_html, render_markdown
    from aeflow.tracking.runs import read_run_info

    paths = cfg.paths
    metrics = json.loads(Path(paths.eval_metrics).read_text())
    details = json.loads(Path(paths.eval_details).read_text())[INSPECTION]
    splits = packed(cfg)
    splits.setup()
    figures = draw(load_weights(cfg, checkpoint_path(cfg, BEST)), splits, details, Path(paths.figures))
    figures += curve_figures(metrics, details, Path(paths.figures))
    train = json.loads(Path(paths.train_metrics).read_text())
    run_id = read_run_info(paths.run_info).get("run_id")
    parts = [("Configuration", "", config_table(cfg, train, run_id, {})), *sections(metrics, details)]
    write_text(paths.report_html, render_html(parts, figures))
    write_text(paths.report_md, render_markdown(parts, figures, paths.report_md))
    log.info("report: %s", Path(paths.report_html).resolve().as_uri())
    return [fig.path for fig in figures]
