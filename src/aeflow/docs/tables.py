"""The docs' tables of figures, rendered from the records in results/ (aeflow.docs.records).

A page asks for a table with a block that the docs build fills in:

    <!-- aeflow:table results-mnist -->
    <!-- /aeflow:table -->

README.md holds its blocks filled (GitHub shows it as it is): `python -m aeflow.docs.tables
--readme` rewrites them, and a test fails when they are stale. `check_page` finds a number
in a table that no record holds: a figure typed by hand.
"""

from __future__ import annotations

import argparse
import fnmatch
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from aeflow.docs.records import NUMBER, RESULTS_DIR, RecordError, held_numbers, is_held, load_records
from aeflow.io import write_text

Records = Mapping[str, Mapping[str, Any]]
BLOCK = re.compile(r"(<!-- aeflow:table (?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /aeflow:table -->)", re.S)
# Pages whose tables hold measured figures: every number in their tables must come from a record.
FIGURE_PAGES = (
    "README.md",
    "docs/results.md",
    "docs/performance.md",
    "docs/anomaly-detection.md",
    "docs/inspection.md",
)
DASH = "–"


def number(value: Any, decimals: int = 4) -> str:
    """A figure as the tables show it: thousands separated, at most `decimals` decimals."""
    if value is None or value == "":
        return DASH
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int) or (abs(value) >= 1000 and float(value).is_integer()):
        return f"{int(value):,}"
    text = f"{value:,.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _machine(record: Mapping[str, Any]) -> str:
    m = record["machine"]
    return f"{m['cpu']}, {m['cores']} cores, {m['numerics']}"


def _runs(record: Mapping[str, Any]) -> str:
    ids = [r["mlflow_run_id"] for r in record.get("runs", []) if r["mlflow_run_id"]]
    return ", ".join(f"`{i[:8]}`" for i in ids) or DASH


def _metric(key: str, decimals: int = 4) -> Callable[[Mapping[str, Any]], str]:
    """A metric of a record's runs: the value, or the mean with the range over seeds."""

    def cell(record: Mapping[str, Any]) -> str:
        runs = [r for r in record.get("runs", []) if key in r["metrics"]]
        if not runs:
            return DASH
        values = [r["metrics"][key] for r in runs]
        if len(set(values)) == 1:
            return number(values[0], decimals)
        mean = sum(values) / len(values)
        seeds = ", ".join(str(r["seed"]) for r in runs)
        return (
            f"{number(mean, decimals)} (mean of seeds {seeds}: "
            f"{number(min(values), decimals)} to {number(max(values), decimals)})"
        )

    return cell


def _markdown(header: Sequence[str], rows: Sequence[Sequence[str]], align: Sequence[str] = ()) -> str:
    align = list(align) or ["---"] * len(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _select(records: Records, patterns: Sequence[str]) -> list[Mapping[str, Any]]:
    """Records matching each glob in turn, each once, in name order within a glob."""
    chosen: dict[str, Mapping[str, Any]] = {}
    for pattern in patterns:
        for name in sorted(records):
            if fnmatch.fnmatchcase(name, pattern):
                chosen.setdefault(name, records[name])
    return list(chosen.values())


def runs_table(patterns: Sequence[str], columns: Sequence[tuple[str, Callable]]) -> Callable[[Records], str]:
    """One row per record matching `patterns`."""

    def render(records: Records) -> str:
        chosen = _select(records, patterns)
        if not chosen:
            raise RecordError(f"no record in {RESULTS_DIR}/ matches {list(patterns)}")
        rows = [[column(r) for _, column in columns] for r in chosen]
        return _markdown([h for h, _ in columns], rows) + _notes(chosen)

    return render


def rows_table(
    name: str, mean_of: Sequence[str] = (), columns: Mapping[str, str] | None = None
) -> Callable[[Records], str]:
    """A benchmark record's rows as they are; `mean_of`: columns that get a mean row; `columns`:
    only these keys, under these headings."""

    def render(records: Records) -> str:
        if name not in records or "rows" not in records[name]:
            raise RecordError(f"{RESULTS_DIR}/{name}.json: missing, or it holds no `rows`")
        rows = records[name]["rows"]
        keys = list(columns) if columns else list(dict.fromkeys(k for row in rows for k in row))
        body = [[number(row.get(k)) for k in keys] for row in rows]
        if mean_of:
            mean = {k: sum(r[k] for r in rows) / len(rows) for k in mean_of}
            body.append(["**mean**" if i == 0 else number(mean.get(k)) for i, k in enumerate(keys)])
        header = [columns[k] for k in keys] if columns else keys
        return _markdown(header, body) + "\n\n" + _source(records[name])

    return render


# The scores' order in the tables (aeflow.evaluation.anomaly.SCORES; PCA's, the baseline, last).
SCORE_ORDER = ("sq_err", "bce", "mahalanobis", "pca")
AUROC = re.compile(r"^anomaly/(?P<protocol>\w+)/(?P<set>[\w-]+)/(?P<score>\w+)/auroc$")


def auroc_table(patterns: Sequence[str]) -> Callable[[Records], str]:
    """AUROC per outside set (rows) and score (columns) of each matching record's first run."""

    def render(records: Records) -> str:
        rows, scores = [], []
        for record in _select(records, patterns):
            found: dict[tuple[str, str], dict[str, float]] = {}
            for key, value in record["runs"][0]["metrics"].items():
                if m := AUROC.match(key):
                    found.setdefault((m["protocol"], m["set"]), {})[m["score"]] = value
                    scores += [m["score"]] if m["score"] not in scores else []
            rows += [(record, f"{p}/{s}", values) for (p, s), values in found.items()]
        scores.sort(key=lambda s: SCORE_ORDER.index(s) if s in SCORE_ORDER else len(SCORE_ORDER))
        header = ["trained on", "outside images", *[f"`{s}`" for s in scores], "MLflow run"]
        body = [
            [record["title"], f"`{name}`", *[number(v.get(s)) for s in scores], _runs(record)]
            for record, name, v in rows
        ]
        return _markdown(header, body) + _notes(_select(records, patterns))

    return render


def _notes(chosen: Sequence[Mapping[str, Any]]) -> str:
    notes = [f"- {r['title']} ({r['date']}): {r['notes']}" for r in chosen if r.get("notes")]
    return "\n\n" + "\n".join(notes) if notes else ""


def _source(record: Mapping[str, Any]) -> str:
    return f"`{record['command']}` on {_machine(record)}, {record['date']}."


RESULT_COLUMNS: list[tuple[str, Callable]] = [
    ("Result", lambda r: r["title"]),
    ("Code size", _metric("latent_dim", 0)),
    ("Test sq. error / image", _metric("test/sq_err_per_image")),
    ("PCA, same code size", _metric("pca/sq_err_per_image", 2)),
    ("Training s", _metric("train_time_s", 0)),
    ("Command", lambda r: f"`{r['command']}`"),
    ("Machine", _machine),
    ("MLflow run", _runs),
]
HEADLINE_COLUMNS = [
    c
    for c in RESULT_COLUMNS
    if c[0] in ("Result", "Code size", "Test sq. error / image", "PCA, same code size", "Command")
]
# Float rounding differs between CPU types, so every figure says which numerics it was measured with.
HEADLINE_COLUMNS.insert(-1, ("Numerics", lambda r: r["machine"]["numerics"]))
# The default's figures: portable numerics (the same on any x86-64 CPU with AVX2), and the
# native spread over seeds on the records' machine.
TUTORIAL = ["tutorial_portable", "tutorial_default_seeds"]

TABLES: dict[str, Callable[[Records], str]] = {
    "headline": runs_table(
        [
            *TUTORIAL,
            "mnist-hinton2006",
            "mnist-hinton2006-portable",
            "mnist-hinton2006-best",
            "mnist-conv",
            "mnist-denoising",
        ],
        HEADLINE_COLUMNS,
    ),
    "results-mnist": runs_table(
        [*TUTORIAL, "mnist-tutorial*", "mnist-hinton2006", "mnist-hinton2006-*", "mnist-*"], RESULT_COLUMNS
    ),
    "results-fashion-mnist": runs_table(["fashion-mnist-*"], RESULT_COLUMNS),
    "anomaly-auroc": auroc_table(["anomaly-*"]),
    "anomaly-one-class": rows_table("one-class-mnist", mean_of=("sq_err", "bce", "mahalanobis", "pca")),
    "bench-training": rows_table("bench-training"),
    "bench-startup": rows_table("bench-startup"),
    "bench-pipeline": rows_table("bench-pipeline"),
    "bench-first-run": rows_table("bench-first-run"),
    "bench-gpu": rows_table("bench-gpu"),
    "onnx-latency": rows_table("onnx-latency"),
    # Each stage's peak anonymous memory and time on your own images (benchmarks/folder_scale.py).
    "folder-scale": rows_table("folder-scale"),
    # Every metric of the inspection preset (ae_*) and of the PCA-residual baseline (pca_*).
    "inspection": rows_table(
        "inspection",
        columns={
            "method": "Maps",
            "type": "Defect type",
            "image_auroc": "Image AUROC",
            "pixel_auroc": "Pixel AUROC",
            "aupro": "AUPRO (FPR ≤ 0.3)",
            "image_f1_max": "Image F1-max",
            "pixel_f1_max": "Pixel F1-max",
        },
    ),
    "inspection-maps": rows_table("inspection_maps"),
}


def render(name: str, records: Records) -> str:
    if name not in TABLES:
        raise RecordError(f"unknown table {name!r}; known: {', '.join(TABLES)} (aeflow.docs.tables.TABLES)")
    return TABLES[name](records)


def fill(text: str, records: Records) -> str:
    """`text` with every `<!-- aeflow:table NAME -->` block filled from the records."""

    def replace(match: re.Match) -> str:
        return f"{match[1]}{render(match['name'], records)}\n{match[4]}"

    return BLOCK.sub(replace, text)


def _table_rows(markdown: str) -> list[tuple[int, str]]:
    """(line number, line) of each table body row (not header, not separator)."""
    lines = markdown.splitlines()
    rows = []
    for i, line in enumerate(lines):
        if not line.lstrip().startswith("|") or re.fullmatch(r"\s*\|[\s:|-]+\|\s*", line):
            continue
        is_header = i + 1 < len(lines) and re.fullmatch(r"\s*\|[\s:|-]+\|\s*", lines[i + 1])
        if not is_header:
            rows.append((i + 1, line))
    return rows


def check_page(markdown: str, held: Sequence[float]) -> list[str]:
    """`line N: 8.38` for each number in a table row that no record holds. Code (`...`),
    links' targets and HTML comments are not figures."""
    bad = []
    for line_no, line in _table_rows(markdown):
        text = re.sub(r"`[^`]*`|\]\([^)]*\)|<!--.*?-->", " ", line)
        bad += [f"line {line_no}: {t}" for t in NUMBER.findall(text) if not is_held(t, held)]
    return bad


def check_pages(root: Path, records: Records, pages: Sequence[str] = FIGURE_PAGES) -> dict[str, list[str]]:
    """Unheld numbers per page, in the page as written and as the docs build renders it."""
    held = held_numbers(records)
    problems = {}
    for page in pages:
        text = (root / page).read_text()
        bad = check_page(text, held) + check_page(fill(text, records), held)
        if bad:
            problems[page] = sorted(set(bad))
    return problems


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Render the tables of figures from results/.")
    parser.add_argument("--readme", action="store_true", help="rewrite README.md's table blocks")
    parser.add_argument("--check", action="store_true", help="fail if a table shows a number no record holds")
    args = parser.parse_args(argv)
    try:
        records = load_records(RESULTS_DIR)
        if args.readme:
            readme = Path("README.md")
            write_text(readme, fill(readme.read_text(), records))
        if args.check:
            problems = check_pages(Path(), records)
            if problems:
                shown = "; ".join(f"{p}: {', '.join(b)}" for p, b in problems.items())
                raise RecordError(
                    f"numbers no record in {RESULTS_DIR}/ holds: {shown}. Record the "
                    "measurement with `aeflow record` and show it through a table block"
                )
    except RecordError as exc:
        raise SystemExit(f"error: {exc}") from None
    if not (args.readme or args.check):
        sys.stdout.write("\n\n".join(f"{n}:\n{render(n, records)}" for n in TABLES) + "\n")


if __name__ == "__main__":
    main()
