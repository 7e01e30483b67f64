"""Fixtures for fault-injection tests: stage processes on tiny data, and a real DVC project copy."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import mlflow
import pytest
from omegaconf import OmegaConf

from aeflow.config.params import compose, params_text
from tests.conftest import REPO, make_synthetic_idx
from tests.helpers import FAST, TINY, clone_project, free_port, run, sh, user_env  # noqa: F401 (TINY, free_port: for the tests)


def stage_env(**extra: str) -> dict[str, str]:
    """The environment DVC would give a stage: this venv first, no tracking URI from the caller."""
    return user_env(**extra)


def frozen_env(project: Path, **extra: str) -> dict[str, str]:
    """stage_env that imports aeflow from the copy's src/: code edited meanwhile cannot change the run."""
    return stage_env(PYTHONPATH=str(project / "src"), **extra)


def dvc(project: Path, *args: str, check: bool = True) -> str:
    proc = run(project, "dvc", *args, env=frozen_env(project), check=check)
    return proc.stdout + proc.stderr


def write_params(
    project: Path, overrides: list[str], data_dir: Path | None = None, files: dict | None = None, edit=None
) -> None:
    """Compose conf/ with `overrides` into `project/params.yaml` (what `dvc exp run -S` does)."""
    cfg = compose(overrides, conf_dir=REPO / "conf")
    if data_dir is not None:
        cfg.paths.data = str(data_dir)
        cfg.data.files = files
    if edit is not None:
        OmegaConf.set_struct(cfg, False)
        edit(cfg)
    project.mkdir(parents=True, exist_ok=True)
    (project / "params.yaml").write_text(params_text(cfg, overrides))


def run_stage(project: Path, stage: str = "train", timeout: float = 600, **env: str):
    """`python -m aeflow.stages.<stage>` in `project`, as DVC runs it; returns the CompletedProcess."""
    return run(
        project,
        sys.executable,
        "-m",
        f"aeflow.stages.{stage}",
        env=stage_env(**env),
        timeout=timeout,
        check=False,
    )


def store_runs(db: Path, experiment: str = "autoencoder") -> list:
    """Every run in the SQLite store `db` (none if the store or experiment does not exist)."""
    if not db.exists():
        return []
    client = mlflow.MlflowClient(f"sqlite:///{db}")
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id]) if exp else []


def logged_models(client: mlflow.MlflowClient, run_id: str) -> set[str]:
    """Names of the models a run logged (MLflow 3 keeps them as LoggedModels, not run artifacts)."""
    run = client.get_run(run_id)
    models = client.search_logged_models(
        [run.info.experiment_id], filter_string=f"source_run_id = '{run_id}'"
    )
    return {m.name for m in models}


@pytest.fixture(scope="session")
def frozen_src(tmp_path_factory) -> str:
    """A copy of src/ for PYTHONPATH: a test that stops and restarts training runs one version of the code."""
    dest = tmp_path_factory.mktemp("frozen") / "src"
    shutil.copytree(REPO / "src", dest, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return str(dest)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("tiny-data")
    return folder, make_synthetic_idx(folder, n_train=120, n_test=40)


@pytest.fixture(scope="session")
def downloaded_project(tmp_path_factory, mnist_slice) -> Path:
    """A clone of the project (git + DVC) whose download stage has run; copy it, do not change it."""
    project = clone_project(tmp_path_factory.mktemp("base-project"))
    write_params(project, [*mnist_slice, *FAST])
    sh(project, "dvc", "repro", "download")
    sh(project, "git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qam", "data")
    return project


def copy_project(base: Path, dest: Path) -> Path:
    shutil.copytree(base, dest, symlinks=True)
    return dest
