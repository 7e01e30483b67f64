"""What the pipeline costs: a fresh `dvc repro`, then one after a training-only change, against the
training they run; and a no-op `dvc repro`.

In a temporary copy of the project (never in the working tree; its stages run the copy's own
code), with MNIST already in data/raw (copied from this checkout or a local mirror):

1. `dvc repro download` (verifies the files in place), timed;
2. fresh: one `dvc repro`, as a user runs it, each stage timed from DVC's "Running stage" line
   for it to the next (DVC's own start-up counted with the first stage); the training time is
   the train stage's own (metrics/train.json);
3. a training-only change (`--change`, default `optimizer.lr=0.005`: read by train alone): params.yaml
   composed again, then one `dvc repro` timed again the same way; the baselines stage must not run;
4. each stage's start-up: a fresh interpreter running the stage's import statements and
   validating its config sections (benchmarks/bench.py's probe);
5. `dvc repro` again with nothing to do, `--noop-repeats` times (median).

Prints a table (per stage: fresh and after the change, wall and start-up; the goals' sums and
ratios), then the JSON (also written to `--json`).

    python benchmarks/pipeline.py                       # the default config (20 epochs)
    python benchmarks/pipeline.py --override trainer.max_epochs=2
    python benchmarks/pipeline.py --keep --fresh-outputs /tmp/fresh   # keep the copy and its first metrics
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import stage_startup  # the same start-up probe as `make bench` (benchmarks/ is on sys.path)

from aeflow.io import write_json  # the project's atomic writer
from aeflow.stages.imports import STAGES as ALL_STAGES

REPO = Path(__file__).resolve().parents[1]
STAGES = tuple(s for s in ALL_STAGES if s != "download")  # in pipeline order
AFTER_TRAINING = tuple(STAGES[STAGES.index("train") + 1 :])
LOCAL_MIRROR = (REPO / ".." / "shared" / "data" / "mnist").resolve()


def copy_env(cwd: Path) -> dict[str, str]:
    """The environment a command runs in inside the copy at `cwd`: this venv's tools, the copy's
    code (not the working tree's), the default (local) MLflow store."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    env["PYTHONPATH"] = str(cwd / "src")
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def sh(cwd: Path, *cmd: str) -> tuple[float, str]:
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=copy_env(cwd), capture_output=True, text=True)
    took = time.perf_counter() - t
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return took, proc.stdout + proc.stderr


def copy_project(dest: Path) -> None:
    """The project's files (tracked, or untracked and not ignored) in a fresh git repository."""
    listed = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for rel in filter(None, listed):
        if (REPO / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dest / rel)
    for generated in ("dvc.lock", "metrics", "plots", "models", "data", "reports", ".resume"):
        path = dest / generated
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    sh(dest, "git", "init", "-q")
    sh(dest, "git", "add", "-A")
    sh(dest, "git", "-c", "user.email=b@b", "-c", "user.name=b", "commit", "-qm", "bench")


def ran(out: str) -> list[str]:
    return [ln.split("'")[1] for ln in out.splitlines() if ln.startswith("Running stage")]


def repro_timed(cwd: Path) -> tuple[dict[str, float], list[str]]:
    """One `dvc repro`, as a user runs it (DVC starts once): {stage: wall s}, and the stages
    that ran. A stage's wall runs from DVC's "Running stage" line for it to the next one (or
    to the end): its process and DVC's bookkeeping of its outputs."""
    env = copy_env(cwd)
    env["PYTHONUNBUFFERED"] = "1"  # DVC's lines as they are written: their times are the stages'
    start = time.perf_counter()
    marks: list[tuple[str, float]] = []
    lines: list[str] = []
    proc = subprocess.Popen(
        ["dvc", "repro"], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("Running stage"):
            marks.append((line.split("'")[1], time.perf_counter()))
    end = time.perf_counter()
    if proc.wait():
        sys.exit(f"dvc repro failed:\n{''.join(lines)[-4000:]}")
    walls = {stage: 0.0 for stage in STAGES}
    for (stage, began), (_, until) in zip(marks, [*marks[1:], ("", end)]):
        walls[stage] = until - began
    # DVC's start-up (reading the graph, checking what changed) goes with the first stage.
    if marks:
        walls[marks[0][0]] += marks[0][1] - start
    return walls, [stage for stage, _ in marks]


def summary(walls: dict[str, float], stages_ran: list[str], train: dict) -> dict:
    train_s = float(train["train_time_s"])
    total = sum(walls.values())
    return {
        "train_time_s": train_s,
        "epochs": train.get("epochs"),
        "stage_s": walls,
        "stages_ran": stages_ran,
        "train_stage_minus_training_s": walls["train"] - train_s,
        "evaluate_plus_visualize_s": walls["evaluate"] + walls["visualize"],
        "after_training_s": sum(walls[s] for s in AFTER_TRAINING),
        "pipeline_s": total,
        "pipeline_over_training": total / train_s,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--override", action="append", default=[], help="Hydra override for params.yaml")
    parser.add_argument(
        "--change", default="optimizer.lr=0.005", help="the training-only change (a Hydra override)"
    )
    parser.add_argument("--noop-repeats", type=int, default=3)
    parser.add_argument("--startup-repeats", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the temporary copy")
    parser.add_argument(
        "--fresh-outputs", help="copy the fresh run's metrics and plots (metrics/, plots/*.csv) here"
    )
    parser.add_argument("--json", default=str(REPO / "bench-results" / "pipeline.json"))
    args = parser.parse_args(argv)

    load_at_start = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="aeflow-pipeline-"))
    try:
        copy_project(tmp)
        raw = tmp / "data" / "raw"
        if (REPO / "data" / "raw").is_dir():
            shutil.copytree(REPO / "data" / "raw", raw)
        overrides = list(args.override)
        if LOCAL_MIRROR.is_dir():
            overrides.append(f"data.source.mirrors=[{LOCAL_MIRROR.as_uri()}/]")
        sh(tmp, sys.executable, "-m", "aeflow.config", *overrides)
        download_s, _ = sh(tmp, "dvc", "repro", "download")
        fresh_walls, fresh_ran = repro_timed(tmp)
        fresh = summary(fresh_walls, fresh_ran, json.loads((tmp / "metrics" / "train.json").read_text()))
        fresh["test_sq_err_per_image"] = json.loads((tmp / "metrics" / "evaluate.json").read_text())["test"][
            "sq_err_per_image"
        ]
        if args.fresh_outputs:  # e.g. to compare them with another version's, file by file
            shutil.copytree(tmp / "metrics", Path(args.fresh_outputs) / "metrics", dirs_exist_ok=True)
            for csv in (tmp / "plots").glob("*.csv"):
                shutil.copy2(csv, Path(args.fresh_outputs) / csv.name)
        sh(tmp, sys.executable, "-m", "aeflow.config", *overrides, args.change)
        changed = sh(tmp, "dvc", "status")[1]
        change_walls, change_ran = repro_timed(tmp)
        change = summary(change_walls, change_ran, json.loads((tmp / "metrics" / "train.json").read_text()))
        startup = {stage: stage_startup(stage, args.startup_repeats, cwd=tmp) for stage in STAGES}
        noop = [sh(tmp, "dvc", "repro")[0] for _ in range(args.noop_repeats)]
        noop_out = sh(tmp, "dvc", "repro")[1]
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    result = {
        "overrides": overrides,
        "change": args.change,
        "load_avg_1min_at_start": load_at_start,
        "load_avg_1min_at_end": os.getloadavg()[0],
        "download_s": download_s,
        "fresh": fresh,
        "after_change": change,
        "dvc_status_after_change": changed,
        "baselines_rerun_after_change": "baselines" in change_ran,
        "stage_startup": startup,
        "noop_repro_s": statistics.median(noop),
        "noop_ran_nothing": not ran(noop_out),
        "kept_copy": str(tmp) if args.keep else None,
    }
    result["rows"] = record_rows(result)  # `aeflow record bench-pipeline --rows <this file>`
    print(table(result))
    print(json.dumps(result, indent=1))
    if args.json:
        write_json(args.json, result)
    return result


def record_rows(r: dict) -> list[dict]:
    """The result as the docs' table rows: each part's wall seconds, fresh and after the change."""
    fresh, change = r["fresh"], r["after_change"]

    def row(part: str, first: float | None, second: float | None, **extra) -> dict:
        cells = {"part": part, "fresh s": first, "after the change s": second, **extra}
        return {k: (round(v, 2) if isinstance(v, float) else v) for k, v in cells.items() if v is not None}

    rows = [row("training (train_time_s)", fresh["train_time_s"], change["train_time_s"])]
    for stage in STAGES:
        ran = stage in change["stages_ran"]
        rows.append(
            row(
                f"stage {stage}",
                fresh["stage_s"][stage],
                change["stage_s"][stage] if ran else None,
                **{"start-up s": r["stage_startup"][stage]["process_s"]},
            )
        )
    rows += [
        row("evaluate + visualize", fresh["evaluate_plus_visualize_s"], change["evaluate_plus_visualize_s"]),
        row("pipeline (one dvc repro)", fresh["pipeline_s"], change["pipeline_s"]),
        row("pipeline / training", fresh["pipeline_over_training"], change["pipeline_over_training"]),
        row("dvc repro download", r["download_s"], None),
        row("no-op dvc repro (median)", r["noop_repro_s"], None),
    ]
    return rows


def table(r: dict) -> str:
    fresh, change = r["fresh"], r["after_change"]
    lines = [
        f"load average at start {r['load_avg_1min_at_start']:.1f}, at end {r['load_avg_1min_at_end']:.1f}; "
        f"overrides: {' '.join(r['overrides']) or '-'}; training-only change: {r['change']}",
        f"{'':<30} {'fresh s':>8} {'change s':>9} {'start-up s':>10}",
        f"{'training (train_time_s)':<30} {fresh['train_time_s']:>8.1f} {change['train_time_s']:>9.1f}"
        f"   ({fresh['epochs']} epochs)",
    ]
    for stage in STAGES:
        skipped = "" if stage in change["stages_ran"] else " (skipped)"
        lines.append(
            f"{'stage ' + stage:<30} {fresh['stage_s'][stage]:>8.1f} {change['stage_s'][stage]:>9.1f} "
            f"{r['stage_startup'][stage]['process_s']:>10.2f}{skipped}"
        )
    lines += [
        f"{'evaluate + visualize':<30} {fresh['evaluate_plus_visualize_s']:>8.1f} "
        f"{change['evaluate_plus_visualize_s']:>9.1f}",
        f"{'after training (' + ', '.join(AFTER_TRAINING) + ')':<30} {fresh['after_training_s']:>8.1f} "
        f"{change['after_training_s']:>9.1f}",
        f"{'pipeline (one dvc repro)':<30} {fresh['pipeline_s']:>8.1f} {change['pipeline_s']:>9.1f}",
        f"{'pipeline / training':<30} {fresh['pipeline_over_training']:>7.2f}x "
        f"{change['pipeline_over_training']:>8.2f}x",
        f"{'baselines (paid once)':<30} {fresh['stage_s']['baselines']:>8.1f}   "
        f"rerun after the change: {r['baselines_rerun_after_change']}",
        f"{'dvc repro download':<30} {r['download_s']:>8.1f}",
        f"{'no-op dvc repro (median)':<30} {r['noop_repro_s']:>8.2f}   ran nothing: {r['noop_ran_nothing']}",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
