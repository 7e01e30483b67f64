"""The team's three services on one machine: PostgreSQL, an S3 object store, an MLflow server.

`aeflow team up` starts, all on 127.0.0.1 and kept in one folder (`.team/`):

- PostgreSQL (the system's `initdb`/`pg_ctl`; as the `postgres` user when run
  as root, since PostgreSQL refuses to run as root), with two databases:
  `mlflow` (the tracking server's backend store) and `optuna` (search studies);
- an S3-compatible store (`moto_server`) with one bucket: MLflow's artifacts
  under `s3://<bucket>/mlartifacts`, DVC's remote under `s3://<bucket>/dvc`;
- `mlflow server` over both, serving artifacts through itself (clients need no
  S3 credentials).

`up` is idempotent: it starts only what is not running, and reuses the ports
of the last start while they are free, so URLs already in a clone's config stay
valid. moto keeps objects in memory: `down` saves the bucket to `.team/s3/` and
`up` loads it back. `down` stops exactly the processes whose ids `up` recorded.
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from aeflow.errors import AeflowError
from aeflow.io import write_json

log = logging.getLogger(__name__)

PG_BIN_ENV = "AEFLOW_PG_BIN"
PG_BIN_DEFAULT = "/usr/lib/postgresql/15/bin"
PG_SYSTEM_USER = "postgres"  # who runs PostgreSQL when `aeflow team` runs as root
DB_USER = "aeflow"
DATABASES = ("mlflow", "optuna")
BUCKET = "aeflow"
# moto accepts any credentials; real S3 or MinIO take the team's own (docs/team.md).
S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "aeflow",
    "AWS_SECRET_ACCESS_KEY": "aeflow-local",
    "AWS_DEFAULT_REGION": "us-east-1",
}
STATE_FILE = "stack.json"
# An MLflow server's workers import MLflow each: minutes on a busy machine.
READY_TIMEOUT_S = 600


class StackError(AeflowError):
    """A service of the team stack cannot be started, reached or stopped."""


@dataclass
class Stack:
    """Where the stack lives and what it listens on; saved as `<root>/stack.json`."""

    root: Path
    pg_port: int = 0
    s3_port: int = 0
    mlflow_port: int = 0
    pg_password: str = field(default_factory=lambda: secrets.token_hex(12))

    @property
    def pg_data(self) -> Path:
        return self.root / "postgres"

    @property
    def s3_snapshot(self) -> Path:
        return self.root / "s3"

    def pid_file(self, service: str) -> Path:
        return self.root / f"{service}.pid"

    def log_file(self, service: str) -> Path:
        return self.root / f"{service}.log"

    def database_url(self, database: str) -> str:
        return f"postgresql://{DB_USER}:{self.pg_password}@127.0.0.1:{self.pg_port}/{database}"

    @property
    def s3_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def tracking_uri(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    @property
    def artifacts_destination(self) -> str:
        return f"s3://{BUCKET}/mlartifacts"

    @property
    def dvc_remote(self) -> str:
        return f"s3://{BUCKET}/dvc"

    def env(self) -> dict[str, str]:
        """The variables a teammate's shell sets to use the stack (`eval "$(aeflow team env)"`)."""
        return {
            "MLFLOW_TRACKING_URI": self.tracking_uri,
            "AEFLOW_SEARCH_STORAGE": self.database_url("optuna"),
            **S3_CREDENTIALS,
        }

    def save(self) -> None:
        state = {k: v for k, v in asdict(self).items() if k != "root"}
        write_json(self.root / STATE_FILE, state)
        (self.root / STATE_FILE).chmod(0o600)  # it holds the database password

    @classmethod
    def load(cls, root: Path) -> Stack:
        root = root.resolve()
        path = root / STATE_FILE
        if not path.is_file():
            return cls(root)
        return cls(root, **json.loads(path.read_text()))


# --- processes -----------------------------------------------------------------------------------


def free_port(preferred: int = 0) -> int:
    """`preferred` if nothing listens on it on 127.0.0.1, else a port the OS picks.

    SO_REUSEADDR, as the servers set it: the connections of a server that was killed linger
    in TIME_WAIT on its port, and a bind without it would call that port taken.
    """
    for port in (preferred, 0) if preferred else (0,):
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise StackError("no free TCP port on 127.0.0.1")


def running_pid(pid_file: Path, expect: str) -> int | None:
    """The pid in `pid_file` if that process is alive and its command line contains `expect`.

    The check on the command line keeps `down` from signalling an unrelated
    process that was given a recycled pid.
    """
    try:
        pid = int(pid_file.read_text().split()[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (OSError, ValueError, IndexError):
        return None
    return pid if expect in cmdline else None


def wait_for(what: str, ready, log_file: Path, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise StackError(
                f"{what} exited with status {proc.returncode}; its log, {log_file}:\n{tail(log_file)}"
            )
        if ready():
            return
        time.sleep(0.3)
    raise StackError(f"{what} not ready after {READY_TIMEOUT_S} s; its log, {log_file}:\n{tail(log_file)}")


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 (127.0.0.1 only)
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def spawn(cmd: list[str], stack: Stack, service: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start `cmd` in its own session (so `down` stops its workers too); record its pid."""
    with open(stack.log_file(service), "ab") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=stack.root,
            env={**os.environ, **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    stack.pid_file(service).write_text(f"{proc.pid}\n")
    return proc


def stop_group(pid: int, what: str, timeout: float = 10) -> None:
    """SIGTERM the process group `up` started, then SIGKILL it if it is still there after `timeout`."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    log.warning("%s (pid %d) did not stop on SIGTERM within %.0f s: killing it", what, pid, timeout)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def executable(name: str) -> str:
    """A console script of this environment (beside the interpreter), else from PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if not found:
        raise StackError(f"`{name}` not found: install the project with `make env` (it is in the dev extra)")
    return found


# --- PostgreSQL ----------------------------------------------------------------------------------


def pg_bin(tool: str) -> str:
    folder = Path(os.environ.get(PG_BIN_ENV, PG_BIN_DEFAULT))
    path = folder / tool
    if not path.is_file():
        raise StackError(
            f"PostgreSQL's {path} not found: install it (Debian/Ubuntu: "
            f"`sudo apt-get install -y postgresql`), or set {PG_BIN_ENV} to the folder of initdb and pg_ctl"
        )
    return str(path)


def as_pg_user(cmd: list[str]) -> list[str]:
    """`cmd` as the `postgres` system user when we are root (PostgreSQL will not run as root)."""
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", PG_SYSTEM_USER, "--", *cmd]


def pg_ctl(stack: Stack, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = as_pg_user([pg_bin("pg_ctl"), "-D", str(stack.pg_data), *args])
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise StackError(
            f"pg_ctl {' '.join(args)} failed ({proc.returncode}): "
            f"{proc.stderr.strip() or proc.stdout.strip()}; "
            f"PostgreSQL's log: {stack.log_file('postgres')}\n{tail(stack.log_file('postgres'))}"
        )
    return proc


def init_postgres(stack: Stack) -> None:
    """A new cluster in `<root>/postgres`: password login for DB_USER over TCP only."""
    data = stack.pg_data
    data.mkdir(mode=0o700, parents=True)
    pwfile = stack.root / "pgpass.tmp"
    pwfile.write_text(stack.pg_password + "\n")
    if os.geteuid() == 0:
        user = pwd.getpwnam(PG_SYSTEM_USER)
        for path in (data, pwfile):
            os.chown(path, user.pw_uid, user.pw_gid)
        for parent in data.parents:  # the postgres user must be able to reach its data folder
            if not os.stat(parent).st_mode & 0o001:
                raise StackError(
                    f"{parent} is not searchable by the {PG_SYSTEM_USER} user, who runs PostgreSQL here "
                    f"(we are root): `chmod o+x {parent}`, or put the stack elsewhere with --dir"
                )
    try:
        cmd = [
            pg_bin("initdb"),
            "-D",
            str(data),
            "-U",
            DB_USER,
            f"--pwfile={pwfile}",
            "--auth-host=scram-sha-256",
            "--auth-local=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
        ]
        proc = subprocess.run(as_pg_user(cmd), capture_output=True, text=True)
    finally:
        pwfile.unlink(missing_ok=True)
    if proc.returncode != 0:
        raise StackError(f"initdb {data} failed: {proc.stderr.strip() or proc.stdout.strip()}")


def pg_connect(stack: Stack, database: str = "postgres", autocommit: bool = False):
    """A psycopg connection to `database` (the driver SQLAlchemy, hence MLflow and Optuna, use)."""
    import psycopg

    return psycopg.connect(stack.database_url(database), connect_timeout=3, autocommit=autocommit)


def pg_ready(stack: Stack) -> bool:
    import psycopg

    try:
        pg_connect(stack).close()
    except psycopg.OperationalError:
        return False
    return True


def start_postgres(stack: Stack) -> None:
    if pg_running(stack):
        return
    if not (stack.pg_data / "PG_VERSION").is_file():
        init_postgres(stack)
    stack.pg_port = free_port(stack.pg_port)
    pg_start(stack)
    # autocommit: CREATE DATABASE cannot run inside a transaction.
    with pg_connect(stack, autocommit=True) as conn:
        for database in DATABASES:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone() is None:
                conn.execute(f'CREATE DATABASE "{database}"')


def pg_running(stack: Stack) -> bool:
    if not (stack.pg_data / "postmaster.pid").is_file():
        return False
    return pg_ctl(stack, "status", check=False).returncode == 0


def pg_start(stack: Stack) -> None:
    """`pg_ctl start` on `stack.pg_port`, its log in `<root>/postgres.log`; wait until it answers.

    The log must be a file: a server started with pg_ctl's own output as its
    stdout would hold our pipe open, and reading it would never end.
    """
    # TCP on 127.0.0.1 only; no Unix socket (its folder would need to be writable by postgres).
    options = f"-p {stack.pg_port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''"
    log_file = stack.log_file("postgres")
    log_file.touch()
    if os.geteuid() == 0:
        user = pwd.getpwnam(PG_SYSTEM_USER)
        os.chown(log_file, user.pw_uid, user.pw_gid)
    pg_ctl(stack, "-l", str(log_file), "-o", options, "-w", "-t", str(READY_TIMEOUT_S), "start")
    wait_for("PostgreSQL", lambda: pg_ready(stack), log_file)


def restart_postgres(stack: Stack) -> None:
    """Restart PostgreSQL on the same port (what an upgrade or a crashed host does to clients)."""
    pg_ctl(stack, "-m", "fast", "-w", "stop")
    pg_start(stack)


# --- the S3 store ---------------------------------------------------------------------------------


def s3_client(stack: Stack):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=stack.s3_endpoint,
        aws_access_key_id=S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=S3_CREDENTIALS["AWS_DEFAULT_REGION"],
        config=Config(retries={"max_attempts": 2}, connect_timeout=3, read_timeout=30),
    )


def start_s3(stack: Stack) -> None:
    if running_pid(stack.pid_file("s3"), "moto_server"):
        return
    stack.s3_port = free_port(stack.s3_port)
    cmd = [executable("moto_server"), "-H", "127.0.0.1", "-p", str(stack.s3_port)]
    proc = spawn(cmd, stack, "s3")
    wait_for("moto_server", lambda: http_ok(f"{stack.s3_endpoint}/moto-api/"), stack.log_file("s3"), proc)
    client = s3_client(stack)
    client.create_bucket(Bucket=BUCKET)
    load_snapshot(stack, client)


def load_snapshot(stack: Stack, client) -> None:
    """Upload the objects `down` saved (moto starts empty)."""
    folder = stack.s3_snapshot
    if not folder.is_dir():
        return
    files = [p for p in folder.rglob("*") if p.is_file()]
    for path in files:
        client.upload_file(str(path), BUCKET, path.relative_to(folder).as_posix())
    log.info("restored %d objects into s3://%s from %s", len(files), BUCKET, folder)


def save_snapshot(stack: Stack) -> None:
    """Download every object of the bucket into `<root>/s3/` (replacing the last snapshot)."""
    client = s3_client(stack)
    partial = stack.root / "s3.partial"
    shutil.rmtree(partial, ignore_errors=True)
    count = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for obj in page.get("Contents", []):
            dest = partial / obj["Key"]
            dest.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(BUCKET, obj["Key"], str(dest))
            count += 1
    partial.mkdir(exist_ok=True)
    shutil.rmtree(stack.s3_snapshot, ignore_errors=True)
    partial.rename(stack.s3_snapshot)
    log.info("saved %d objects of s3://%s to %s", count, BUCKET, stack.s3_snapshot)


# --- the MLflow server ----------------------------------------------------------------------------


def start_mlflow(stack: Stack) -> None:
    if running_pid(stack.pid_file("mlflow"), "mlflow"):
        return
    stack.mlflow_port = free_port(stack.mlflow_port)
    cmd = [
        executable("mlflow"),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(stack.mlflow_port),
        "--workers",
        "2",
        "--backend-store-uri",
        stack.database_url("mlflow"),
        "--artifacts-destination",
        stack.artifacts_destination,
    ]
    env = {
        "MLFLOW_S3_ENDPOINT_URL": stack.s3_endpoint,
        **S3_CREDENTIALS,
        # MLflow's job runner (a pool of huey consumers, each importing MLflow) serves its GenAI
        # features (trace rollups, prompt optimisation), which the project does not use; on a
        # laptop it would double the server's start-up.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    proc = spawn(cmd, stack, "mlflow", env)
    wait_for("mlflow server", lambda: http_ok(f"{stack.tracking_uri}/health"), stack.log_file("mlflow"), proc)


def stop_mlflow(stack: Stack) -> int | None:
    """Stop the MLflow server `up` started; its pid, or None when none ran."""
    if pid := running_pid(stack.pid_file("mlflow"), "mlflow"):
        stop_group(pid, "mlflow server")
    stack.pid_file("mlflow").unlink(missing_ok=True)
    return pid


# --- up / down -----------------------------------------------------------------------------------


def up(root: Path, wipe: bool = False) -> Stack:
    """Start whatever of the stack in `root` is not running; return it. `wipe`: start from empty."""
    root = root.resolve()
    if wipe and root.exists():
        down(root, save=False)
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        root.chmod(0o755)  # PostgreSQL, run as `postgres`, reaches its data folder through it
    stack = Stack.load(root)
    stack.save()  # the password is kept before initdb uses it
    start_postgres(stack)
    stack.save()
    s3_port = stack.s3_port
    start_s3(stack)
    stack.save()
    if s3_port and stack.s3_port != s3_port:
        # Its old port was taken: the running MLflow server still sends artifacts to that one.
        log.warning(
            "The S3 store moved from port %d to %d: restarting the MLflow server; update each "
            "clone's DVC remote (dvc remote modify team endpointurl %s)",
            s3_port,
            stack.s3_port,
            stack.s3_endpoint,
        )
        stop_mlflow(stack)
    start_mlflow(stack)
    stack.save()
    return stack


def down(root: Path, save: bool = True) -> list[str]:
    """Stop what `up` started in `root` (the MLflow server, the S3 store, PostgreSQL); return what stopped.

    With `save`, the bucket is saved to `<root>/s3/` first, for the next `up`.
    """
    stack = Stack.load(root)
    stopped = [f"mlflow server (pid {pid})"] if (pid := stop_mlflow(stack)) else []
    if pid := running_pid(stack.pid_file("s3"), "moto_server"):
        if save:
            save_snapshot(stack)
        stop_group(pid, "moto_server")
        stopped.append(f"S3 store moto_server (pid {pid})")
    stack.pid_file("s3").unlink(missing_ok=True)
    if stack.pg_data.is_dir() and pg_running(stack):
        pid = (stack.pg_data / "postmaster.pid").read_text().split()[0]
        pg_ctl(stack, "-m", "fast", "-w", "stop")
        stopped.append(f"PostgreSQL (pid {pid})")
    return stopped


def describe(stack: Stack) -> str:
    """What a teammate types to use the stack."""
    exports = "\n".join(f"  export {k}={v}" for k, v in stack.env().items())
    return f"""\
The team stack is up (its files: {stack.root}).

MLflow tracking server (backend: PostgreSQL; artifacts: {stack.artifacts_destination}, proxied)
  export MLFLOW_TRACKING_URI={stack.tracking_uri}

DVC remote (S3 at {stack.s3_endpoint})
  dvc remote add -d team {stack.dvc_remote}
  dvc remote modify team endpointurl {stack.s3_endpoint}

Optuna storage (aeflow search)
  export AEFLOW_SEARCH_STORAGE={stack.database_url("optuna")}

Or all of the variables at once (DVC reads the S3 credentials from them): eval "$(aeflow team env)"
{exports}

Stop it with `aeflow team down` (data is kept for the next `up`; `up --wipe` starts empty).
"""
