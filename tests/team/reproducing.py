"""What the `aeflow reproduce` tests share: one real pipeline run per test module (`original`: a
slice of real MNIST, one short epoch, in a clone tracked to its own SQLite store), the command as
a user runs it, and copies of the run with tags or metrics changed.

Each module that imports `original` builds its own run (module scope), so the modules run on
different pytest-xdist workers at once; none of the tests changes the original run.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
from mlflow.entities import Metric, Param

from aeflow.tracking.lineage import CONFIG_ARTIFACT
from tests.helpers import BIN, FAST, clone_project, user_env

TAMPERED = "test/sq_err_per_image"


@dataclass
class Original:
    project: Path
    run_id: str
    client: mlflow.MlflowClient


def overrides(mnist_slice: list[str]) -> list[str]:
    return [*mnist_slice, *FAST]


@pytest.fixture(scope="module")
def original(tmp_path_factory, mnist_slice) -> Original:
    """One pipeline run in a clone whose params.yaml is composed after the commit (as `dvc exp run`
    leaves it), tracked to the clone's own SQLite store."""
    project = clone_project(tmp_path_factory.mktemp("reproduce"))
    in_clone(project, str(BIN / "python"), "-m", "aeflow.config", *overrides(mnist_slice))  # params.yaml
    in_clone(project, "dvc", "repro")
    run_id = json.loads((project / "models/run.json").read_text())["run_id"]
    return Original(project, run_id, mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}"))


def in_clone(project: Path, *cmd: str) -> subprocess.CompletedProcess:
    """Run `cmd` on the clone's own code (the environment's editable install is this checkout's, which
    other work may change while the tests run); fail with its output if it fails."""
    proc = subprocess.run(
        cmd, cwd=project, env=user_env(PYTHONPATH=str(project / "src")), capture_output=True, text=True
    )
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


# Another kernel family this CPU runs on request (ATen without vector extensions, MKL's SSE2
# branch): what a teammate's other CPU does to a native run's rounding.
OTHER_FAMILY = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE"}


def reproduce(project: Path, *args: str, **env_vars: str) -> subprocess.CompletedProcess:
    """`.venv/bin/aeflow reproduce ...` as a user runs it without activating the venv: PATH lacks it."""
    env = user_env(PYTHONPATH=str(project / "src"), **env_vars)
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if Path(p) != BIN)
    return subprocess.run(
        [str(BIN / "aeflow"), "reproduce", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
    )


def table_rows(stdout: str) -> dict[str, list[str]]:
    """metric -> [original, reproduced, difference, match] from the printed table."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:1] == ["metric"])
    rows = {}
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        metric, *cells = line.split()
        rows[metric] = cells
    return rows


def reproductions(client: mlflow.MlflowClient, run_id: str) -> list:
    experiment = client.get_run(run_id).info.experiment_id
    return client.search_runs([experiment], f"tags.`aeflow.reproduces` = '{run_id}'")


def copy_run(
    client: mlflow.MlflowClient,
    run_id: str,
    scale: dict[str, float] | None = None,
    seed: int | None = None,
    **tags: str,
) -> str:
    """A finished copy of run `run_id` (tags, params, test metrics, logged config) with `tags` changed,
    the metrics in `scale` multiplied, and (`seed`) a logged config whose seed differs from the params."""
    source = client.get_run(run_id)
    copy = client.create_run(source.info.experiment_id, tags={**source.data.tags, **tags}).info.run_id
    metrics = {k: v * (scale or {}).get(k, 1.0) for k, v in source.data.metrics.items()}
    client.log_batch(
        copy,
        metrics=[Metric(k, v, 0, 0) for k, v in metrics.items()],
        params=[Param(k, v) for k, v in source.data.params.items()],
    )
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(client.download_artifacts(run_id, CONFIG_ARTIFACT, tmp))
        if seed is not None:
            config.write_text(
                config.read_text().replace(f"seed: {source.data.params['seed']}\n", f"seed: {seed}\n", 1)
            )
        client.log_artifact(copy, str(config), str(Path(CONFIG_ARTIFACT).parent))
    client.set_terminated(copy)
    return copy
