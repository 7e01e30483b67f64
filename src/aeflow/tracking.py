"""MLflow: where runs are stored, and the one run a pipeline execution writes to.

The train stage opens the run and writes its id to `paths.run_info`; evaluate
and visualize reopen that run, so one `dvc repro` lands in one MLflow run.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow

from aeflow.errors import TrackingError
from aeflow.io import write_json

log = logging.getLogger(__name__)

DEFAULT_STORE = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"


EXP_TMP = Path(".dvc", "tmp", "exps")  # where `dvc exp run --queue/--temp` runs experiments


def project_root() -> Path:
    """The repository root the project's store belongs to.

    DVC runs stage commands from the repository root and sets DVC_ROOT; a
    queued or `--temp` experiment runs in a throwaway copy under
    `<root>/.dvc/tmp/exps/`, and DVC sets DVC_ROOT to the main repository's
    root there, so every experiment's run lands in the project's one store.
    """
    root = os.environ.get("DVC_ROOT")
    if root and Path(root).is_dir():
        return Path(root).resolve()
    cwd = Path.cwd().resolve()
    parts = cwd.parts
    for i in range(len(parts) - len(EXP_TMP.parts) + 1):
        if parts[i : i + len(EXP_TMP.parts)] == EXP_TMP.parts:
            return Path(*parts[:i])  # run by hand inside an experiment's temporary copy
    return cwd


def tracking_uri(configured: str | None = None) -> str:
    """`mlflow.tracking_uri` from config, else MLFLOW_TRACKING_URI, else the project's SQLite store."""
    if configured:
        return configured
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{(project_root() / DEFAULT_STORE).resolve()}"


def ensure_experiment(client: mlflow.MlflowClient, name: str, uri: str) -> str:
    """The id of experiment `name`, created if missing (artifacts beside a local store)."""
    try:
        exp = client.get_experiment_by_name(name)
    except Exception as exc:  # noqa: BLE001 (any failure here means the store is unusable)
        raise TrackingError(
            f"Cannot reach the MLflow tracking store {uri}: {type(exc).__name__}: {exc}. "
            "Start the server or unset MLFLOW_TRACKING_URI to use the local SQLite store."
        ) from exc
    if exp is not None:
        return exp.experiment_id
    location = None
    if uri.startswith("sqlite:"):
        location = (project_root() / ARTIFACTS_DIR).resolve().as_uri()
    return client.create_experiment(name, artifact_location=location)


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists are kept as values."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def git_dirty() -> bool:
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                             capture_output=True, text=True, check=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return bool(out.strip())


def dvc_data_hash(data_path: str, lock_file: str = "dvc.lock") -> str:
    """DVC's hash of the downloaded data folder, from dvc.lock (written after each stage)."""
    import yaml

    try:
        lock = yaml.safe_load(Path(lock_file).read_text())
        for out in lock["stages"]["download"]["outs"]:
            if out["path"] == data_path:
                return out["md5"]
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        pass
    return "unknown"


def write_run_info(path: str | Path, run_id: str, uri: str, experiment_id: str) -> None:
    write_json(path, {"run_id": run_id, "tracking_uri": uri, "experiment_id": experiment_id})


def read_run_info(path: str | Path) -> dict[str, str]:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise TrackingError(f"{path}: cannot read the MLflow run id ({exc}); run `dvc repro train`") from exc


def resume_run(run_info_path: str | Path, configured_uri: str | None = None) -> mlflow.ActiveRun:
    """Reopen the run the train stage created (same store, same run id)."""
    info = read_run_info(run_info_path)
    uri = tracking_uri(configured_uri)
    mlflow.set_tracking_uri(uri)
    return mlflow.start_run(run_id=info["run_id"])
