"""Helpers for tests that run the real pipeline in a temporary copy of the project."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

# A small slice of real MNIST: one short epoch.
FAST = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=20",
    "trainer.limit_val_batches=4",
    "trainer.enable_progress_bar=false",
    # Evaluation probes fitted on fewer training codes (the test set stays the full 10k).
    "evaluate.probe_train_size=2000",
    "visualize.map_points=2000",
]


def sh(cwd: Path, *cmd: str) -> str:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


def clone_project(dest: Path) -> Path:
    """Copy the project's files (tracked or not ignored) into a fresh git repository."""
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
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    for generated in ("dvc.lock", "metrics", "plots", "models", "data"):
        path = dest / generated
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    sh(dest, "git", "init", "-q")
    sh(dest, "git", "-c", "user.email=t@t", "-c", "user.name=t", "add", "-A")
    sh(dest, "git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init")
    return dest


def compose(project: Path, *overrides: str) -> None:
    # What `dvc exp run -S ...` does: compose conf/ with overrides into params.yaml.
    sh(project, sys.executable, "-m", "aeflow.config", *overrides)


def ran_stages(output: str) -> set[str]:
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}
