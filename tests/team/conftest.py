"""Fixtures for the team workflow tests: real servers on free ports, one shared pipeline run.

`team_project` runs the real pipeline once (a slice of real MNIST, one short
epoch) in a temporary clone, tracking to a real `mlflow server` and
registering the model; the serving, registry, CLI, UI and remote-data tests
all read that one run.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import helpers
from tests.helpers import (  # noqa: F401 (BIN, free_port, stop_server: for the tests)
    BIN,
    FAST,
    Server,
    clone_project,
    compose,
    free_port,
    mlflow_command,
    ran_stages,
    start_mlflow_server,
    start_server,
    stop_server,
)

# `original`: module scope, so each `aeflow reproduce` test module builds its own pipeline run and
# the modules run on different workers (tests/conftest.py groups a module-scoped fixture's tests).
from tests.team.reproducing import original  # noqa: F401

MODEL_NAME = "aeflow-mnist"


# The environment a user's shell would have: the venv first on PATH, and only the given store.
env_for = helpers.user_env


def run(
    cwd: Path, *cmd: str, tracking_uri: str | None = None, timeout: int = 900, check: bool = True
) -> subprocess.CompletedProcess:
    return helpers.run(cwd, *cmd, env=env_for(tracking_uri), timeout=timeout, check=check)


def serve_model(model_uri: str, cwd: Path, tracking_uri: str) -> Server:
    """`mlflow models serve` of `model_uri` on a free port of 127.0.0.1, started and answering /ping."""
    port = free_port()
    command = mlflow_command("models", "serve", "-m", model_uri, "--env-manager", "local", port=port)
    log = cwd / "serve.log"
    return start_server(command, port, log, cwd=cwd, ready_path="/ping", tracking_uri=tracking_uri)


@dataclass
class TrackingServer(Server):
    backend_uri: str
    artifacts: Path


@pytest.fixture(scope="session")
def tracking_server(tmp_path_factory) -> Iterator[TrackingServer]:
    """A real `mlflow server`: SQLite backend, proxied artifacts in a local folder, 127.0.0.1 only."""
    root = tmp_path_factory.mktemp("mlflow-server")
    server = start_mlflow_server(root)
    yield TrackingServer(
        server.url, server.proc, server.log, f"sqlite:///{root / 'server.db'}", root / "server-artifacts"
    )
    stop_server(server)


@dataclass
class TeamProject:
    path: Path
    tracking_uri: str
    repro_output: str
    # Local-store files present right after the repro against the server (later tests,
    # e.g. the queued sweep, log to the clone's own store on purpose).
    local_store_after_repro: list[str]


@pytest.fixture(scope="session")
def team_project(tmp_path_factory, mnist_slice, tracking_server) -> TeamProject:
    """A clone that ran `dvc repro` once against the tracking server, model registered, results committed."""
    project = clone_project(tmp_path_factory.mktemp("team-project"))
    compose(
        project,
        *mnist_slice,
        *FAST,
        f"mlflow.register_model={MODEL_NAME}",
    )
    out = run(project, "dvc", "repro", tracking_uri=tracking_server.url)
    output = out.stdout + out.stderr
    assert ran_stages(output) == {"download", "baselines", "train", "evaluate", "package", "visualize"}, (
        output[-3000:]
    )
    local_store = [name for name in ("mlflow.db", "mlartifacts") if (project / name).exists()]
    # What a user commits after a run: dvc.lock, params, metrics (outs live in DVC's cache).
    run(project, "git", "add", "-A")
    run(project, "git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "trained")
    return TeamProject(project, tracking_server.url, output, local_store)
