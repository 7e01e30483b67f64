"""One report people read instead of logs: a self-contained HTML file (images inlined as
base64, no server, no network) and a Markdown twin, both built from the same tables.

Input: the config, the evaluate stage's metrics and details, the train metrics and
the figures. Output: text; the visualize stage writes it atomically and logs it to
the MLflow run.
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from aeflow.data.folder import describe
from aeflow.data.schema import is_packed
from aeflow.evaluation import metrics as M
from aeflow.evaluation.scoring import COMPRESSION, MODEL, PCA_KEY, PIXELS
from aeflow.reporting.elements import Figure, Table, fmt

TITLE = "Autoencoder evaluation report"
# Hinton & Salakhutdinov, "Reducing the dimensionality of data with neural networks",
# Science 313 (2006), Fig. 2B: average squared error per MNIST test image with 30-D codes.
HINTON_2006 = {"code_size": 30, "dataset": "mnist", "autoencoder": 3.00, "logistic PCA": 8.01, "PCA": 13.87}
HINTON_CITE = (
    "Hinton & Salakhutdinov (2006), Reducing the dimensionality of data with neural "
    "networks, Science 313:504-507, Fig. 2B"
)


def hinton_applies(cfg: DictConfig, metrics: Mapping) -> bool:
    return (
        int(metrics.get("latent_dim", -1)) == HINTON_2006["code_size"]
        and str(cfg.data.get("name", "")).lower() == HINTON_2006["dataset"]
    )


def _network(node: Mapping, first: str, last: Any) -> str:
    """'MLPEncoder 784→256→128' from a network's config (class name alone if it has no layer list)."""
    name = str(node.get("_target_", "?")).rsplit(".", 1)[-1]
    if "hidden" not in node:
        return name
    end = node.get(last, last) if isinstance(last, str) else last
    sizes = [node.get(first, "?"), *node.get("hidden", []), end]
    return f"{name} {'→'.join(str(x) for x in sizes)}"


def dataset_text(cfg: DictConfig, details: Mapping) -> str:
    """The data in words: the folder, size and channels of your images; MNIST's official test set."""
    if is_packed(cfg.data):
        test_images = details.get("probes", {}).get("test_images", "?")
        return f"{describe(cfg.data)}; test split: {test_images} images"
    return f"{describe(cfg.data)} (test set: official 10k images)"


def config_table(cfg: DictConfig, train: Mapping, run_id: str | None, details: Mapping) -> Table:
    model = cfg.model
    enc, dec = model.get("encoder", {}), model.get("decoder", {})
    arch = f"{_network(enc, 'in_features', model.latent_dim)}, {_network(dec, 'latent_dim', 'out_features')}"
    if enc.get("activation"):
        arch += f"; activation {enc.get('activation')}, code activation {enc.get('code_activation', '–')}"
    opt = cfg.optimizer
    rows = [
        ["dataset", dataset_text(cfg, details)],
        ["model", arch],
        ["code size (latent_dim)", str(model.latent_dim)],
        ["loss", str(model.get("loss", "?"))],
        ["optimizer", f"{opt._target_.rsplit('.', 1)[-1]}, lr {fmt(float(opt.lr), 4)}"],
        ["batch size", str(cfg.data.batch_size)],
        ["epochs", f"{fmt(train.get('epochs'))} run (max_epochs {cfg.trainer.max_epochs})"],
        ["best validation loss", fmt(train.get("best_val_loss"), 5)],
        ["training time (s)", fmt(train.get("train_time_s"), 1)],
        ["seed", str(cfg.seed)],
        ["MLflow run", run_id or "–"],
    ]
    if numerics := train.get("numerics"):  # the fingerprint training recorded (aeflow.numerics)
        rows.append(["numerics", numerics_text(numerics)])
    return Table(["setting", "value"], rows, numeric=False)


def numerics_text(numerics: Mapping) -> str:
    """The numerics mode, CPU, kernel family and thread count a run trained with, and its hash."""
    return (
        f"{numerics.get('mode')} on {numerics.get('cpu.model')}: ATen {numerics.get('aten.capability')}, "
        f"MKL_CBWR {numerics.get('mkl.cbwr')}, {numerics.get('threads')} thread(s), GPU "
        f"{numerics.get('gpu')} (fingerprint {numerics.get('hash')})"
    )


def metrics_table(cfg: DictConfig, metrics: Mapping) -> Table:
    k = metrics.get("latent_dim")
    model, pca, pixels = metrics[MODEL], metrics[PCA_KEY], metrics.get(PIXELS, {})
    pixel_count = metrics.get(COMPRESSION, {}).get("bytes_pixels_uint8", 784)
    header = ["metric", "better", f"autoencoder ({k}-D code)", f"PCA ({k} components)"]
    if pixels:  # the probes on raw pixels: only for labelled images
        header.append(f"raw pixels ({pixel_count})")
    hinton = hinton_applies(cfg, metrics)
    if hinton:
        header.append("Hinton & Salakhutdinov 2006, 30-D")
    rows = []
    for key in (*M.RECONSTRUCTION_KEYS, *M.PROBE_KEYS, M.SQ_ERR_FP16, M.SQ_ERR_INT8):
        if key not in model:
            continue
        name, better = M.LABELS[key]
        row = [name, better, fmt(model.get(key)), fmt(pca.get(key))]
        if pixels:
            row.append(fmt(pixels.get(key)))
        if hinton:
            row.append(
                f"{HINTON_2006['autoencoder']:.2f} (autoencoder), {HINTON_2006['PCA']:.2f} (PCA)"
                if key == M.SQ_ERR
                else "–"
            )
        rows.append(row)
    return Table(header, rows)


def compression_table(metrics: Mapping) -> Table:
    c = metrics.get(COMPRESSION, {})
    model, pca = metrics[MODEL], metrics[PCA_KEY]
    rows = [
        ["raw image (uint8 pixels)", fmt(c.get("bytes_pixels_uint8")), "0", "0"],
        ["code, float32", fmt(c.get("bytes_float32")), fmt(model.get(M.SQ_ERR)), fmt(pca.get(M.SQ_ERR))],
        [
            "code, float16",
            fmt(c.get("bytes_float16")),
            fmt(model.get(M.SQ_ERR_FP16)),
            fmt(pca.get(M.SQ_ERR_FP16)),
        ],
        [
            "code, 8-bit (per-unit affine)",
            fmt(c.get("bytes_int8")),
            fmt(model.get(M.SQ_ERR_INT8)),
            fmt(pca.get(M.SQ_ERR_INT8)),
        ],
    ]
    return Table(
        [
            "stored as",
            "bytes per image",
            "autoencoder: squared error per image",
            "PCA: squared error per image",
        ],
        rows,
    )


def per_digit_table(details: Mapping, noun: str = "digit") -> Table:
    by = details.get("by_digit", {})
    model, pca = by.get(MODEL, {}), by.get(PCA_KEY, {})
    rows = [
        [
            d,
            fmt(model[d].get("count")),
            fmt(model[d][M.SQ_ERR]),
            fmt(pca.get(d, {}).get(M.SQ_ERR)),
            fmt(model[d][M.PSNR]),
            fmt(model[d][M.SSIM]),
            fmt(pca.get(d, {}).get(M.SSIM)),
        ]
        for d in sorted(model, key=int)
    ]
    return Table(
        [
            noun,
            "test images",
            "autoencoder: sq. error/image",
            "PCA: sq. error/image",
            "autoencoder: PSNR (dB)",
            "autoencoder: SSIM",
            "PCA: SSIM",
        ],
        rows,
    )


def worst_table(details: Mapping, noun: str = "digit") -> Table:
    worst = details.get("worst", [])
    labelled = all("digit" in w for w in worst)  # unlabelled images have none
    rows = [
        [str(r + 1), str(w["index"]), *([str(w["digit"])] if labelled else []), fmt(w[M.SQ_ERR], 2)]
        for r, w in enumerate(worst)
    ]
    return Table(["rank", "test image index", *([noun] if labelled else []), "squared error"], rows)


def hinton_text(cfg: DictConfig, metrics: Mapping) -> str:
    if hinton_applies(cfg, metrics):
        h = HINTON_2006
        return (
            f"Reference ({HINTON_CITE}): with 30-D codes on MNIST the deep autoencoder reached "
            f"{h['autoencoder']:.2f} squared error per test image, logistic PCA {h['logistic PCA']:.2f} "
            f"and PCA {h['PCA']:.2f}. This run: autoencoder {metrics[MODEL][M.SQ_ERR]:.2f}, "
            f"PCA {metrics[PCA_KEY][M.SQ_ERR]:.2f}."
        )
    return (
        f"The reference figures of {HINTON_CITE} are for 30-D codes on MNIST; this run has "
        f"{metrics.get('latent_dim')}-D codes on {describe(cfg.data)}, so they are not shown. PCA with "
        "the "
        "same code size is the baseline instead."
    )


def sections(
    cfg: DictConfig, metrics: Mapping, details: Mapping, train: Mapping, run_id: str | None
) -> list[tuple[str, str, Table | None]]:
    """(heading, paragraph, table) in report order; without labels (`M.SKIPPED` in the metrics)
    the probes and the per-label table are left out, and the metrics paragraph says why."""
    probes = details.get("probes", {})
    noun = "class" if is_packed(cfg.data) else "digit"  # data=folder: class subfolders
    pixels = metrics.get(COMPRESSION, {}).get("bytes_pixels_uint8", 784)
    summed = (
        f"Squared error per image is summed over the {pixels} pixel values (in [0, 1]) and "
        "averaged over images."
    )
    if M.SKIPPED in metrics:
        measured = (
            f"Reconstruction of the {probes.get('test_images', '?')} test images. {summed} "
            f"Not measured: {metrics[M.SKIPPED]}."
        )
    else:
        measured = (
            "Reconstruction of the test images, then feature quality: a k-NN classifier "
            f"(k={probes.get('knn_k', '?')}) and a logistic-regression probe fitted on the codes of "
            f"{probes.get('probe_train_images', '?')} training images and scored on the codes of "
            f"{probes.get('test_images', '?')} test images, beside PCA codes of the same size and raw "
            f"pixels. {summed}"
        )
    per_label = [] if M.SKIPPED in metrics else [(f"Per {noun}", "", per_digit_table(details, noun))]
    return [
        ("Configuration", "", config_table(cfg, train, run_id, details)),
        ("Metrics on the test set", measured, metrics_table(cfg, metrics)),
        ("Reference", hinton_text(cfg, metrics), None),
        (
            "Compression",
            "Bytes per image of the code, and the squared error per image when the decoder is fed the "
            "code after rounding to that precision (8-bit: per-unit range fitted on training codes, "
            "stored once with the decoder).",
            compression_table(metrics),
        ),
        *per_label,
        (
            "Worst-reconstructed test images",
            "The anomaly view: the test images the autoencoder reconstructs worst.",
            worst_table(details, noun),
        ),
        *anomaly_section(metrics, details),
    ]


def anomaly_section(metrics: Mapping, details: Mapping) -> list[tuple[str, str, Table | None]]:
    from aeflow.reporting.anomaly_figures import section  # matplotlib: only when a report is built

    return section(metrics, details)


# --- rendering -------------------------------------------------------------------------------------

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;
margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right;font-size:14px}
th:first-child,td:first-child,table.text td,table.text th{text-align:left}
th{background:#f3f3f3}
figure{margin:1em 0 2em}
figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:13px;color:#555}
p{line-height:1.45}
"""


def _html_table(t: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in t.header)
    cls = "" if t.numeric else ' class="text"'
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in t.rows)
    return f"<table{cls}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_table(t: Table) -> str:
    lines = [
        "| " + " | ".join(_md_cell(h) for h in t.header) + " |",
        "|" + "|".join(["---"] + ["---:" if t.numeric else "---"] * (len(t.header) - 1)) + "|",
    ]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in t.rows]
    return "\n".join(lines)


def render_html(parts: Sequence[tuple[str, str, Table | None]], figures: Sequence[Figure]) -> str:
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(TITLE)}</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(TITLE)}</h1>",
    ]
    for heading, text, table in parts:
        out.append(f"<h2>{html.escape(heading)}</h2>")
        if text:
            out.append(f"<p>{html.escape(text)}</p>")
        if table is not None:
            out.append(_html_table(table))
    out.append("<h2>Figures</h2>")
    for fig in figures:
        data = base64.b64encode(Path(fig.path).read_bytes()).decode("ascii")
        out.append(
            f'<figure><img alt="{html.escape(fig.caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(fig.caption)}</figcaption></figure>"
        )
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def render_markdown(
    parts: Sequence[tuple[str, str, Table | None]], figures: Sequence[Figure], md_path: str | Path
) -> str:
    """Markdown with the same tables; figures are linked relative to `md_path`'s folder."""
    out = [f"# {TITLE}", ""]
    for heading, text, table in parts:
        out += [f"## {heading}", ""]
        if text:
            out += [text, ""]
        if table is not None:
            out += [_md_table(table), ""]
    out += ["## Figures", ""]
    base = Path(md_path).resolve().parent
    for fig in figures:
        rel = Path(os.path.relpath(Path(fig.path).resolve(), base)).as_posix()
        out += [f"![{fig.caption}]({rel})", "", f"*{fig.caption}*", ""]
    return "\n".join(out)


def build(
    cfg: DictConfig,
    metrics: Mapping,
    details: Mapping,
    train: Mapping,
    figures: Sequence[Figure],
    md_path: str | Path,
    run_id: str | None = None,
) -> tuple[str, str]:
    """(HTML, Markdown) of the report."""
    parts = sections(cfg, metrics, details, train, run_id)
    return render_html(parts, figures), render_markdown(parts, figures, md_path)
