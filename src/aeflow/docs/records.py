"""Result records: one JSON file per measurement in `results/`, the only source of the docs' figures.

A record holds what reproduces a figure and where it was measured:

    {"name": "mnist-tutorial",              # = the file's stem
     "title": "tutorial (the default)",
     "command": "make run",                 # the exact command that reproduces it
     "date": "2026-11-27",
     "machine": {"cpu": "AMD EPYC", "cores": 2, "numerics": "native", "fingerprint": null},
     "runs": [{"seed": 42, "mlflow_run_id": "...", "metrics": {"test/sq_err_per_image": 8.38}}],
     "notes": "one line"}                   # optional

A benchmark may hold `rows` (a list of flat dicts, one per table row) instead of `runs`.
`aeflow record` writes one from an MLflow run or a metrics file; the docs build renders
the tables from the records (aeflow.docs.tables), and a table cell showing a number
that no record holds fails the build.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import math
import os
import re
import statistics
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from aeflow.errors import AeflowError
from aeflow.io import write_text

log = logging.getLogger(__name__)

RESULTS_DIR = "results"
REQUIRED_KEYS = ("name", "title", "command", "date", "machine")
OPTIONAL_KEYS = ("runs", "rows", "notes")
MACHINE_KEYS = ("cpu", "cores", "numerics", "fingerprint")
NUMERICS = ("native", "portable")
RUN_KEYS = ("seed", "mlflow_run_id", "metrics")
# The MLflow tags the numerics fingerprint is recorded under (aeflow.numerics.*).
FINGERPRINT_TAG = "aeflow.numerics.hash"
CPU_TAGS = ("aeflow.numerics.cpu.model",)  # the numerics fingerprint's tag (aeflow.numerics.fingerprint)
NUMERICS_PARAM = "performance.numerics"
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
# A number as a table or a string shows it: 8.3841, 2,844,314, -0.5, 1e-05 (not the 2006 of hinton2006).
NUMBER = re.compile(r"(?<![\w.])[-+]?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\w])")


class RecordError(AeflowError):
    """A results record is malformed, or a page shows a figure no record holds."""


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_record(record: Any, path: Path) -> None:
    """Raise RecordError naming the file, the bad key and what is expected."""

    def fail(what: str) -> None:
        raise RecordError(f"{path}: {what} (see aeflow.docs.records for the format)")

    if not isinstance(record, dict):
        fail(f"expected a JSON object, got {type(record).__name__}")
    unknown = sorted(set(record) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS))
    missing = [k for k in REQUIRED_KEYS if k not in record]
    if unknown or missing:
        fail(f"unknown key(s) {unknown}, missing key(s) {missing}")
    if record["name"] != path.stem or not _NAME.match(path.stem):
        fail(f"name={record['name']!r}: must equal the file's stem {path.stem!r} (lower case, digits, -_.)")
    for key in ("title", "command"):
        if not isinstance(record[key], str) or not record[key].strip():
            fail(f"{key}={record[key]!r}: must be a non-empty string")
    if not isinstance(record["date"], str) or not _DATE.match(record["date"]):
        fail(f"date={record['date']!r}: must be YYYY-MM-DD")
    machine = record["machine"]
    if not isinstance(machine, dict) or sorted(machine) != sorted(MACHINE_KEYS):
        fail(f"machine={machine!r}: must have exactly the keys {', '.join(MACHINE_KEYS)}")
    if machine["numerics"] not in NUMERICS:
        fail(f"machine.numerics={machine['numerics']!r}: allowed: {', '.join(NUMERICS)}")
    if not isinstance(machine["cores"], int) or machine["cores"] < 1:
        fail(f"machine.cores={machine['cores']!r}: must be a positive integer")
    if ("runs" in record) == ("rows" in record):
        fail("must hold either `runs` or `rows`, not both or neither")
    for i, run in enumerate(record.get("runs", [])):
        if not isinstance(run, dict) or sorted(run) != sorted(RUN_KEYS):
            fail(f"runs[{i}]: must have exactly the keys {', '.join(RUN_KEYS)}")
        bad = {k: v for k, v in run["metrics"].items() if not _is_number(v)}
        if bad:
            fail(f"runs[{i}].metrics: not finite numbers: {bad}")
    for i, row in enumerate(record.get("rows", [])):
        if not isinstance(row, dict) or any(isinstance(v, (dict, list)) for v in row.values()):
            fail(f"rows[{i}]: must be a flat object (numbers, strings, booleans, null)")
    if not record.get("runs", record.get("rows")):
        fail("`runs` or `rows` is empty")


def load_records(folder: str | os.PathLike = RESULTS_DIR) -> dict[str, dict[str, Any]]:
    """Every `<folder>/*.json`, checked, by name (sorted)."""
    records = {}
    for path in sorted(Path(folder).glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise RecordError(f"{path}: not valid JSON ({exc}); fix or remove the file") from None
        check_record(record, path)
        records[record["name"]] = record
    return records


def metric_values(record: Mapping[str, Any], key: str) -> list[float]:
    """The metric `key` of each run that has it."""
    return [run["metrics"][key] for run in record.get("runs", []) if key in run["metrics"]]


def _strings_and_numbers(value: Any) -> Iterator[Any]:
    if isinstance(value, dict):
        for item in value.values():
            yield from _strings_and_numbers(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings_and_numbers(item)
    else:
        yield value


def parse_number(token: str) -> float:
    return float(token.replace(",", ""))


def held_numbers(records: Mapping[str, Mapping[str, Any]]) -> list[float]:
    """Every number the records hold: values, the numbers written in their strings, and each
    metric's (or row column's) mean, min and max over a record's runs (or rows)."""
    held: set[float] = set()
    for record in records.values():
        for value in _strings_and_numbers(dict(record)):
            if _is_number(value):
                held.add(float(value))
            elif isinstance(value, str):
                held.update(parse_number(t) for t in NUMBER.findall(value))
        columns: dict[str, list[float]] = {}
        for entry in [run["metrics"] for run in record.get("runs", [])] + list(record.get("rows", [])):
            for key, value in entry.items():
                if _is_number(value):
                    columns.setdefault(key, []).append(float(value))
        for values in columns.values():
            held.update((statistics.fmean(values), min(values), max(values)))
    return sorted(held)


def is_held(token: str, held: Sequence[float]) -> bool:
    """Whether a number as shown (`token`, rounded to its digits) is one of `held`."""
    shown = parse_number(token)
    mantissa = token.lower().split("e")[0]
    decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
    if "e" in token.lower():
        tolerance = abs(shown) * 10.0 ** -(decimals + 1) * 5
    else:
        tolerance = 0.5 * 10.0**-decimals
    tolerance += 1e-12 * max(1.0, abs(shown))
    return any(abs(abs(value) - abs(shown)) <= tolerance for value in held)


def local_cpu() -> str:
    """The CPU's model name as /proc/cpuinfo (or the platform) gives it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def machine_info(tags: Mapping[str, str] | None = None, params: Mapping[str, str] | None = None) -> dict:
    """The machine block of a record: the run's numerics tags where it has them, else this machine."""
    tags, params = tags or {}, params or {}
    cpu = next((tags[t] for t in CPU_TAGS if tags.get(t)), None) or local_cpu()
    numerics = params.get(NUMERICS_PARAM) or "native"
    return {
        "cpu": cpu,
        "cores": os.cpu_count() or 1,
        "numerics": numerics,
        "fingerprint": tags.get(FINGERPRINT_TAG),
    }


def flatten(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Nested metrics (metrics/*.json) as MLflow names them: {"test": {"psnr": 1}} -> {"test/psnr": 1}.
    Strings (such as `mlflow_run_id` or a `skipped` note) are left out."""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}/"))
        elif _is_number(value):
            flat[name] = value
    return flat


def runs_from_mlflow(run_ids: Iterable[str], tracking_uri: str | None) -> tuple[list[dict], dict]:
    """Each run's seed, id and metrics from the store; the machine block of the first run."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    runs, machine = [], None
    for run_id in run_ids:
        run = client.get_run(run_id)
        seed = run.data.params.get("seed")
        runs.append(
            {
                "seed": int(seed) if seed is not None and seed.lstrip("-").isdigit() else None,
                "mlflow_run_id": run.info.run_id,
                "metrics": dict(sorted(run.data.metrics.items())),
            }
        )
        machine = machine or machine_info(run.data.tags, run.data.params)
    return runs, machine


def runs_from_files(paths: Iterable[str], seed: int | None) -> tuple[list[dict], dict]:
    """One run from metrics files (metrics/train.json, metrics/evaluate.json, ...), merged."""
    metrics: dict[str, float] = {}
    run_id = None
    for path in paths:
        data = json.loads(Path(path).read_text())
        run_id = run_id or data.get("mlflow_run_id")
        metrics.update(flatten(data))
    run = {"seed": seed, "mlflow_run_id": run_id, "metrics": dict(sorted(metrics.items()))}
    return [run], machine_info()


def rows_from_file(path: str) -> list[dict]:
    """Table rows from a JSON file: a list of flat objects, or an object holding one under `rows`."""
    data = json.loads(Path(path).read_text())
    rows = data.get("rows") if isinstance(data, dict) else data
    if not isinstance(rows, list):
        raise RecordError(f"{path}: expected a list of rows (or an object with `rows`)")
    return rows


def write_record(record: dict[str, Any], folder: str | os.PathLike = RESULTS_DIR) -> Path:
    """Check `record` and write it as `<folder>/<name>.json`."""
    path = Path(folder) / f"{record['name']}.json"
    check_record(record, path)
    write_text(path, json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    return path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aeflow record",
        description="Write results/NAME.json from MLflow runs or metrics files; the docs' tables follow.",
    )
    parser.add_argument("name", help="the record's name (its file is results/NAME.json)")
    parser.add_argument("--command", required=True, help="the exact command that reproduces the figures")
    parser.add_argument("--title", help="what the record measures (default: the name)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", action="append", metavar="RUN_ID", help="an MLflow run (repeat for seeds)")
    source.add_argument("--metrics", action="append", metavar="FILE", help="metrics/*.json of one run")
    source.add_argument("--rows", metavar="FILE", help="a benchmark's JSON rows")
    parser.add_argument("--tracking-uri", help="default: MLFLOW_TRACKING_URI, else sqlite:///mlflow.db")
    parser.add_argument("--seed", type=int, help="the seed, with --metrics (default: params.yaml's)")
    parser.add_argument("--notes", help="one line on what else a reader needs to know")
    parser.add_argument("--date", default=dt.date.today().isoformat(), help="YYYY-MM-DD (default: today)")
    parser.add_argument("--out", default=RESULTS_DIR, help="the records folder (default: results)")
    return parser


def _params_seed() -> int | None:
    path = Path("params.yaml")
    if not path.is_file():
        return None
    import yaml

    return (yaml.safe_load(path.read_text()) or {}).get("seed")


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    try:
        record: dict[str, Any] = {
            "name": args.name,
            "title": args.title or args.name,
            "command": args.command,
            "date": args.date,
        }
        if args.run:
            uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"
            record["runs"], record["machine"] = runs_from_mlflow(args.run, uri)
        elif args.metrics:
            seed = args.seed if args.seed is not None else _params_seed()
            record["runs"], record["machine"] = runs_from_files(args.metrics, seed)
        else:
            record["rows"], record["machine"] = rows_from_file(args.rows), machine_info()
        record = {k: record[k] for k in (*REQUIRED_KEYS, "runs", "rows") if k in record}
        if args.notes:
            record["notes"] = args.notes
        path = write_record(record, args.out)
    except (AeflowError, OSError, json.JSONDecodeError) as exc:
        raise SystemExit(f"error: {exc}") from None
    log.info("wrote %s (%s); `make docs` renders it", path, record["machine"]["cpu"])


if __name__ == "__main__":
    main()
