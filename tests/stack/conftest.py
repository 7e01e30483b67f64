"""The team stack as a team runs it: one `aeflow team up` (real PostgreSQL, a real S3 endpoint, a
real `mlflow server`) for the whole session, and clones of the project set up as teammates' are.

A clone's pipeline runs on tiny synthetic data (its own `conf/data/tiny.yaml`, downloaded from a
file:// mirror like any dataset) so that `dvc exp run`, `dvc repro` and `aeflow reproduce` run
every stage in seconds.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
import yaml

from aeflow.team import stack as team
from tests.conftest import make_synthetic_idx
from tests.helpers import BIN, REPO, clone_project, require_system_path, user_env


def pytest_collection_modifyitems(config, items):
    """Every test here needs the whole stack (one per session): `make test-stack` runs them alone."""
    for item in items:
        if "tests/stack/" in item.nodeid:
            item.add_marker(pytest.mark.stack)


# Two short epochs of a small network on 120 training images, every stage kept small.
TINY_PRESET = {
    "data": {"batch_size": 16, "val_size": 20},
    "model": {"latent_dim": 8, "encoder": {"hidden": [32]}, "decoder": {"hidden": [32]}},
    "trainer": {
        "max_epochs": 2,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "log_every_n_steps": 1,
    },
    "evaluate": {"probe_train_size": 100, "corruptions": ["flip_lr"]},
    "visualize": {"map_points": 40, "interpolation_pairs": 2, "interpolation_steps": 3},
}


def stack_env(stack: team.Stack, project: Path | None = None, **extra: str) -> dict[str, str]:
    """A teammate's shell after `eval "$(aeflow team env)"`; `project`: run that clone's own code."""
    if project is not None:  # through user_env, which keeps the network guard first on the path
        extra.setdefault("PYTHONPATH", str(project / "src"))
    env = user_env(**stack.env(), **extra)
    # System metrics sampled every second: training here lasts seconds, not minutes.
    env.setdefault("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "1")
    env.setdefault("MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING", "1")
    return env


def run_in(
    project: Path, stack: team.Stack, *cmd: str, check: bool = True, timeout: float = 600, **extra: str
) -> subprocess.CompletedProcess:
    """Run `cmd` in the clone, on its own code, with the stack's variables; fail with its output."""
    proc = subprocess.run(
        cmd,
        cwd=project,
        env=stack_env(stack, project, **extra),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check:
        assert proc.returncode == 0, (
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-4000:]}"
        )
    return proc


@pytest.fixture(scope="session")
def stack() -> Iterator[team.Stack]:
    """`aeflow team up` in a folder of its own; `aeflow team down` at the end of the session.

    The folder is not under pytest's temporary root: that is private to its owner (0700), and
    PostgreSQL runs as the `postgres` user when the tests run as root.
    """
    require_system_path(Path(os.environ.get(team.PG_BIN_ENV, team.PG_BIN_DEFAULT)) / "initdb", "postgresql")
    root = Path(tempfile.mkdtemp(prefix="aeflow-stack-"))
    try:
        up = team_command(root, "up")
        assert up.returncode == 0, f"aeflow team up failed:\n{up.stdout}\n{up.stderr}"
        yield team.Stack.load(root)
    finally:
        team_command(root, "down")  # also after a failed `up`: whatever it started
        shutil.rmtree(root, ignore_errors=True)


def team_command(root: Path, action: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "aeflow"), "team", action, "--dir", str(root)],
        cwd=REPO,
        env=user_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.fixture(scope="session")
def tiny_mirror(tmp_path_factory) -> tuple[Path, dict]:
    """Tiny synthetic IDX files as .gz in a folder (a file:// mirror) and their `data.files`."""
    folder = tmp_path_factory.mktemp("tiny-mirror")
    return folder, make_synthetic_idx(folder, n_train=120, n_test=40, gz=True)


def tiny_clone(dest: Path, mirror: tuple[Path, dict], remote: str | None = None) -> Path:
    """A clone of the project whose conf/ selects the tiny data and preset, committed."""
    folder, files = mirror
    project = clone_project(dest)
    data = yaml.safe_load((REPO / "conf/data/mnist.yaml").read_text())
    data.update(name="tiny", files=files, source={"mirrors": [folder.as_uri() + "/"]})
    (project / "conf/data/tiny.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    preset = "# @package _global_\n" + yaml.safe_dump(TINY_PRESET, sort_keys=False)
    (project / "conf/experiment/stack_tiny.yaml").write_text(preset)
    config = project / "conf/config.yaml"
    text = config.read_text().replace("  - data: mnist\n", "  - data: tiny\n")
    config.write_text(text.replace("  - experiment: tutorial\n", "  - experiment: stack_tiny\n"))
    subprocess.run([str(BIN / "python"), "-m", "aeflow.config"], cwd=project, check=True, env=user_env())
    git(project, "add", "-A")
    git(project, "commit", "-qm", "tiny data and preset")
    return project


def add_dvc_remote(project: Path, stack: team.Stack) -> None:
    """What `aeflow team up` prints: the team's DVC remote on the stack's S3 endpoint, committed."""
    dvc = str(BIN / "dvc")
    subprocess.run([dvc, "remote", "add", "-d", "team", stack.dvc_remote], cwd=project, check=True)
    subprocess.run(
        [dvc, "remote", "modify", "team", "endpointurl", stack.s3_endpoint], cwd=project, check=True
    )
    git(project, "add", ".dvc/config")
    git(project, "commit", "-qm", "the team's DVC remote")


def git(project: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.email=t@t", "-c", "user.name=t", *args],
        cwd=project,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def pg_rows(stack: team.Stack, query: str, *params) -> list[tuple]:
    """Rows of `query` on the MLflow database, read straight from PostgreSQL."""
    with team.pg_connect(stack, "mlflow") as conn:
        return conn.execute(query, params).fetchall()


def duplicated_metric_steps(stack: team.Stack, run_ids: list[str]) -> list[tuple]:
    """(run, key, step) of every metric the runs logged more than once at one step, from PostgreSQL.

    System metrics are sampled, not logged per step; Lightning logs `epoch` with each call that
    logs at a step (the step's train and its val metrics), so two `epoch` rows there are expected.
    """
    return pg_rows(
        stack,
        "SELECT run_uuid, key, step FROM metrics WHERE run_uuid = ANY(%s) AND key NOT LIKE 'system/%%' "
        "AND key <> 'epoch' GROUP BY run_uuid, key, step HAVING count(*) > 1",
        run_ids,
    )


def signal_group(group: int, signum: int) -> None:
    """`signum` to every process of `group`; a group that has ended is left to its caller's check."""
    with suppress(ProcessLookupError):
        os.killpg(group, signum)


@contextmanager
def frozen(group: int) -> Iterator[None]:
    """Every process of `group` stopped (SIGSTOP) inside the block, continued after it: a test
    looks at a pipeline or worker between two of its steps, however fast the machine runs it."""
    signal_group(group, signal.SIGSTOP)
    try:
        yield
    finally:
        signal_group(group, signal.SIGCONT)
