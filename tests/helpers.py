"""Helpers shared by every test tier: the tiny config's overrides, the one way to run a
subprocess, real servers on free ports (`mlflow server`, `mlflow models serve`, the UI), and the
real pipeline in a temporary copy."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GUARD_DIR = Path(__file__).resolve().parent / "netguard"
BIN = Path(sys.executable).parent

# Small, quiet training on tiny synthetic data (tests/conftest.py's make_synthetic_idx).
TINY = [
    "trainer.max_epochs=2",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "trainer.log_every_n_steps=1",
    "data.batch_size=16",
    "data.val_size=20",
]

# One short epoch, for a pipeline on a slice of real MNIST (tests/conftest.py mnist_slice).
FAST = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=20",
    "trainer.limit_val_batches=4",
    "trainer.enable_progress_bar=false",
    # Evaluation probes fitted on fewer training codes.
    "evaluate.probe_train_size=2000",
    "visualize.map_points=2000",
    # Two shifted copies instead of every one: the shift protocol still runs end to end.
    "evaluate.corruptions=[flip_lr,gaussian_noise]",
]


def user_env(tracking_uri: str | None = None, **extra: str) -> dict[str, str]:
    """The environment a user's shell (or DVC, for a stage) would give a process: this venv first
    on PATH, unbuffered output, no tracking store or DVC experiment of the caller's; `tracking_uri`
    becomes MLFLOW_TRACKING_URI."""
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", PYTHONUNBUFFERED="1")
    for var in ("MLFLOW_TRACKING_URI", "DVC_ROOT", "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV", "DVC_STAGE"):
        env.pop(var, None)
    if tracking_uri:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    env.update(extra)
    # The network guard (tests/netguard) stays first on the path, whatever PYTHONPATH `extra` sets.
    paths = env.get("PYTHONPATH", "").split(os.pathsep)
    if str(GUARD_DIR) not in paths:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(GUARD_DIR), *paths]))
    return env


def run(
    cwd: Path,
    *cmd: str,
    env: dict[str, str] | None = None,
    timeout: float = 900,
    check: bool = True,
) -> subprocess.CompletedProcess:
    """Run `cmd` in `cwd` (environment: `env`, default user_env()); with `check`, fail the test
    with the command's output when it exits non-zero."""
    proc = subprocess.run(
        cmd, cwd=cwd, env=env or user_env(), capture_output=True, text=True, timeout=timeout
    )
    if check:
        assert proc.returncode == 0, (
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
    return proc


def sh(cwd: Path, *cmd: str) -> str:
    """Run `cmd` in `cwd`, which must succeed; return its output (stdout, then stderr)."""
    proc = run(cwd, *cmd)
    return proc.stdout + proc.stderr


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the OS picks it, so xdist workers differ)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    proc: subprocess.Popen
    log: Path


def start_server(
    cmd: list[str],
    port: int,
    log: Path,
    cwd: Path,
    ready_path: str = "/health",
    tracking_uri: str | None = None,
    attempts: int = 600,
) -> Server:
    """Start `cmd` (which listens on 127.0.0.1:port) and wait until `ready_path` answers 200."""
    url = f"http://127.0.0.1:{port}"
    handle = log.open("w")
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=user_env(tracking_uri),
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    for _ in range(attempts):  # polls until the server answers (it loads MLflow, maybe torch)
        if proc.poll() is not None:
            pytest.fail(f"{' '.join(cmd)} exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(url + ready_path, timeout=5) as resp:  # noqa: S310
                if resp.status == 200:
                    return Server(url, proc, log)
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    stop_server(Server(url, proc, log))
    pytest.fail(f"{' '.join(cmd)} did not answer on {url}{ready_path}:\n{log.read_text()[-4000:]}")


def stop_server(server: Server, crash: bool = False) -> None:
    """Stop the server's process group (it forks workers): SIGTERM, or SIGKILL at once with `crash`."""
    if server.proc.poll() is None:
        os.killpg(server.proc.pid, signal.SIGKILL if crash else signal.SIGTERM)
        try:
            server.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.proc.pid, signal.SIGKILL)
            server.proc.wait()


def mlflow_command(*args: str, port: int) -> list[str]:
    """`mlflow <args>` listening on 127.0.0.1:`port` only, with one worker."""
    return [str(BIN / "mlflow"), *args, "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]


def start_mlflow_server(
    root: Path, port: int | None = None, backend_uri: str | None = None, artifacts: Path | None = None
) -> Server:
    """A real `mlflow server` on 127.0.0.1 (`port`, default a free one): the SQLite store
    `root`/server.db unless `backend_uri` names another, artifacts proxied into `artifacts`
    (default `root`/server-artifacts)."""
    port = port or free_port()
    command = mlflow_command(
        "server",
        "--backend-store-uri",
        backend_uri or f"sqlite:///{root / 'server.db'}",
        "--artifacts-destination",
        str(artifacts or root / "server-artifacts"),
        port=port,
    )
    return start_server(command, port, root / f"mlflow-server-{port}.log", cwd=root)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_system_path(path: Path, package: str) -> Path:
    """`path`, installed by Debian's `package`. Missing: the test skips, naming the install
    command; under CI=true it fails instead, so CI proves what the test covers."""
    if path.exists():
        return path
    message = f"{path} not found: it comes with Debian's {package} (sudo apt-get install -y {package})"
    if in_ci():
        pytest.fail(f"{message}; CI must have it (.ci/run installs it)")
    pytest.skip(message)


def run_pytest(folder: Path, *args: str) -> subprocess.CompletedProcess:
    """pytest on the small suite in `folder` (its own rootdir), importing this project's tests."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args, "--rootdir", str(folder), folder],
        cwd=folder,
        env={**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{folder}"},
        capture_output=True,
        text=True,
        timeout=600,
    )


def require_module(name: str, package: str | None = None):
    """The imported module `name` (from the Python package `package`, default `name`). Missing: the
    test skips naming the install command; under CI=true it fails instead, so CI proves it."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError as exc:
        package = package or name
        message = f"{name} cannot be imported ({exc}): install {package} (make env, or pip install {package})"
        if in_ci():
            pytest.fail(f"{message}; CI must have it")
        pytest.skip(message, allow_module_level=True)


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
