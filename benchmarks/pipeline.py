"""Pipeline overhead: a fresh `dvc repro` against the training it runs, and a no-op `dvc repro`.

In a temporary copy of the project (never in the working tree; its stages run the
copy's own code), with MNIST already in data/raw (copied from this checkout or a
local mirror):

1. `dvc repro download` (verifies the files in place), timed;
2. `dvc repro train`, `dvc repro evaluate`, `dvc repro visualize`, each timed;
   the train stage's own training time is read from metrics/train.json (train_time_s);
3. each stage's start-up: a fresh interpreter running the stage's import
   statements and validating its config sections (benchmarks/bench.py's probe);
4. `dvc repro` again with nothing to do, `--noop-repeats` times (median).

Prints a table (training, each stage's wall and start-up, pipeline / training),
then the JSON (also written to `--json`).

    python benchmarks/pipeline.py                       # the default config (20 epochs)
    python benchmarks/pipeline.py --override trainer.max_epochs=2
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

REPO = Path(__file__).resolve().parents[1]
STAGES = ("train", "evaluate", "visualize")
LOCAL_MIRROR = (REPO / ".." / "shared" / "data" / "mnist").resolve()


def sh(cwd: Path, *cmd: str) -> tuple[float, str]:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    env["PYTHONPATH"] = str(cwd / "src")  # the copy's code, not the working tree's
    env.pop("MLFLOW_TRACKING_URI", None)
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
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


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--override", action="append", default=[], help="Hydra override for params.yaml")
    parser.add_argument("--noop-repeats", type=int, default=3)
    parser.add_argument("--startup-repeats", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the temporary copy")
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
        # One stage at a time (each `dvc repro <stage>` runs only that one: its
        # upstream is done), so the overhead can be split by stage.
        stage_s, out = {}, ""
        for stage in STAGES:
            stage_s[stage], more = sh(tmp, "dvc", "repro", stage)
            out += more
        rest_s = sum(stage_s.values())
        train = json.loads((tmp / "metrics" / "train.json").read_text())
        evaluated = json.loads((tmp / "metrics" / "evaluate.json").read_text())
        startup = {stage: stage_startup(stage, args.startup_repeats, cwd=tmp) for stage in STAGES}
        noop = [sh(tmp, "dvc", "repro")[0] for _ in range(args.noop_repeats)]
        noop_out = sh(tmp, "dvc", "repro")[1]
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    train_s = float(train["train_time_s"])
    result = {
        "overrides": overrides,
        "load_avg_1min_at_start": load_at_start,
        "download_s": download_s,
        "train_time_s": train_s,
        "epochs": train.get("epochs"),
        "test_sq_err_per_image": evaluated["test"]["sq_err_per_image"],
        "stage_s": stage_s,
        "stage_startup": startup,
        "train_stage_minus_training_s": stage_s["train"] - train_s,
        "evaluate_plus_visualize_s": stage_s["evaluate"] + stage_s["visualize"],
        "pipeline_s": rest_s,
        "pipeline_over_training": rest_s / train_s,
        "noop_repro_s": statistics.median(noop),
        "noop_ran_nothing": "Running stage" not in noop_out,
        "stages_ran": [ln.split("'")[1] for ln in out.splitlines() if ln.startswith("Running stage")],
    }
    print(table(result))
    print(json.dumps(result, indent=1))
    if args.json:
        write_json(args.json, result)
    return result


def table(r: dict) -> str:
    lines = [
        f"load average at start {r['load_avg_1min_at_start']:.1f}; "
        f"overrides: {' '.join(r['overrides']) or '-'}",
        f"{'':<28} {'wall s':>8} {'start-up s':>10} {'imports s':>9} {'config s':>8}",
        f"{'training (train_time_s)':<28} {r['train_time_s']:>8.1f}   ({r['epochs']} epochs; test squared "
        f"error per image {r['test_sq_err_per_image']:.4f})",
    ]
    for stage in STAGES:
        up = r["stage_startup"][stage]
        lines.append(
            f"{'dvc repro ' + stage:<28} {r['stage_s'][stage]:>8.1f} {up['process_s']:>10.2f} "
            f"{up['imports_s']:>9.2f} {up['config_s']:>8.3f}"
        )
    lines += [
        f"{'evaluate + visualize':<28} {r['evaluate_plus_visualize_s']:>8.1f}",
        f"{'pipeline (the three stages)':<28} {r['pipeline_s']:>8.1f}   "
        f"= {r['pipeline_over_training']:.2f}x the training",
        f"{'dvc repro download':<28} {r['download_s']:>8.1f}",
        f"{'no-op dvc repro (median)':<28} {r['noop_repro_s']:>8.2f}   ran nothing: {r['noop_ran_nothing']}",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
