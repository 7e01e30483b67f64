"""MLflow: where runs are stored, and the one run a pipeline execution writes to.

The train stage opens the run and writes its id to `paths.run_info`; evaluate
and visualize reopen that run, so one `dvc repro` lands in one MLflow run.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
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


# --- Reliability: fast preflight, a busy-tolerant SQLite store, no secrets in logs ---------------

PREFLIGHT_TIMEOUT_S = 5.0
SQLITE_BUSY_TIMEOUT_S = 60  # SQLite's default is 5 s: too short for four runs writing at once
SQLITE_LOCKED_RETRIES = 5


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///...` URI (query string dropped), else None."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///") :].split("?", 1)[0])


def store_uri(uri: str) -> str:
    """The URI MLflow is given: a SQLite store waits up to 60 s for a lock instead of failing.

    The `timeout` query parameter is pysqlite's busy timeout (SQLAlchemy passes
    it to sqlite3.connect); an explicit one in the URI is kept.
    """
    if sqlite_path(uri) is None or "timeout=" in uri:
        return uri
    return f"{uri}{'&' if '?' in uri else '?'}timeout={SQLITE_BUSY_TIMEOUT_S}"


def redact_uri(uri: str) -> str:
    """`https://user:secret@host/x` -> `https://***@host/x`: safe to log or write to a file."""
    try:
        parts = urllib.parse.urlsplit(uri)
    except ValueError:
        return uri
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=f"***@{host}"))


def preflight(uri: str, timeout: float = PREFLIGHT_TIMEOUT_S) -> None:
    """Fail in seconds, naming the URI, if the tracking store cannot be used.

    MLflow's own client retries HTTP requests with backoff for minutes
    (MLFLOW_HTTP_REQUEST_MAX_RETRIES, MLFLOW_HTTP_REQUEST_TIMEOUT); this is
    one request with a short timeout and no retries, before any training.
    Any HTTP answer (even 401/404) means a server is there; only a refused
    connection, a timeout or an unresolvable host fails. A SQLite store's
    folder must be writable.
    """
    shown = redact_uri(uri)
    db = sqlite_path(uri)
    if db is not None:
        folder = db.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TrackingError(f"MLflow tracking store {shown}: cannot create {folder} ({exc})") from exc
        if not os.access(folder, os.W_OK):
            raise TrackingError(f"MLflow tracking store {shown}: folder {folder} is not writable")
        return
    if not uri.startswith(("http://", "https://")):
        return  # file:, databricks, ...: MLflow's own errors are clear enough
    # urllib takes `user:pass@host` for a host name; any answer (even 401) will do, so drop the userinfo.
    parts = urllib.parse.urlsplit(uri)
    bare = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    if bare != uri:
        # MLflow prints "View run ... at: <tracking URI>" to stdout as a run ends: credentials included.
        os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    health = bare.rstrip("/") + "/health"
    started = time.monotonic()
    try:
        with urllib.request.urlopen(health, timeout=timeout):  # noqa: S310 (http(s) checked above)
            pass
    except urllib.error.HTTPError:
        pass  # a server answered
    except OSError as exc:  # refused, timed out, unresolvable (URLError is an OSError)
        reason = getattr(exc, "reason", exc)
        raise TrackingError(
            f"Cannot reach the MLflow tracking server {shown} ({reason}; gave up after "
            f"{time.monotonic() - started:.1f} s). Start the server, fix MLFLOW_TRACKING_URI "
            "(or mlflow.tracking_uri), or unset it to use the local SQLite store."
        ) from exc


@contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Serialise first use of a SQLite store across processes (schema creation, migration).

    Two processes that open a new mlflow.db at once both try to create the
    tables; an exclusive lock on `<db>.lock` makes the second wait and then
    find them. The store is switched to WAL journaling, so readers do not
    block the writer. Other stores: no-op.
    """
    db = sqlite_path(uri)
    if db is None:
        yield
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{db}.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            _enable_wal(db)
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _enable_wal(db: Path) -> None:
    import sqlite3

    try:
        with sqlite3.connect(db, timeout=SQLITE_BUSY_TIMEOUT_S) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
    except sqlite3.Error as exc:  # WAL is an optimisation; the busy timeout is the guarantee
        log.warning("Could not switch %s to WAL journaling: %s", db, exc)


def is_locked_error(exc: BaseException) -> bool:
    return "database is locked" in str(exc) or "database is busy" in str(exc)


# What SQLite, PostgreSQL and MySQL say when an INSERT hits a row another writer just added.
_DUPLICATE_ROW = (
    "UNIQUE constraint failed",
    "duplicate key value violates unique constraint",
    "Duplicate entry",
)


def is_duplicate_row_error(exc: BaseException) -> bool:
    return any(text in str(exc) for text in _DUPLICATE_ROW)


def retry_locked(fn, *args, **kwargs):
    """Call `fn`; on SQLite's "database is locked", wait and retry, then re-raise (never swallow)."""
    return _retry(is_locked_error, fn, *args, **kwargs)


def _retry(retryable, fn, *args, **kwargs):
    for attempt in range(SQLITE_LOCKED_RETRIES):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if not retryable(exc) or attempt == SQLITE_LOCKED_RETRIES - 1:
                raise
            log.warning("MLflow store write did not go through (%s); retrying in %d s", exc, 2**attempt)
            time.sleep(2**attempt)
    raise AssertionError("unreachable")


def log_inputs(client: mlflow.MlflowClient, run_id: str, datasets: list) -> None:
    """`client.log_inputs`, safe when other processes log the same datasets to the experiment at once.

    MLflow looks up the experiment's datasets, then inserts the ones it did not
    find, in one transaction; two processes logging the same dataset (runs of
    one sweep or search, same data) can both decide to insert it, and the
    later one fails on the unique (experiment, name, digest) row. That
    transaction is rolled back whole, so calling again is safe: it finds the
    other process's row and links this run to it.
    """
    _retry(
        lambda e: is_locked_error(e) or is_duplicate_row_error(e),
        client.log_inputs,
        run_id,
        datasets=datasets,
    )


def ensure_experiment(client: mlflow.MlflowClient, name: str, uri: str) -> str:
    """The id of experiment `name`, created if missing (artifacts beside a local store)."""
    try:
        exp = client.get_experiment_by_name(name)
    except Exception as exc:  # noqa: BLE001 (any failure here means the store is unusable)
        raise TrackingError(
            f"Cannot reach the MLflow tracking store {redact_uri(uri)}: {type(exc).__name__}: {exc}. "
            "Start the server or unset MLFLOW_TRACKING_URI to use the local SQLite store."
        ) from exc
    if exp is not None:
        return exp.experiment_id
    location = None
    database = sqlite_path(uri)
    if database is not None:  # beside the database file: the project's mlflow.db, or a test's own store
        location = (database.resolve().parent / ARTIFACTS_DIR).as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except mlflow.exceptions.MlflowException:
        exp = client.get_experiment_by_name(name)  # another process created it first
        if exp is None:
            raise
        return exp.experiment_id


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


def metric_keys(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """A nested metrics file as MLflow metrics: {'test': {'mse': 1.0}} -> {'test/mse': 1.0}."""
    return {key.replace(".", "/"): value for key, value in flatten(metrics).items()}


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# What decides a run's result besides its recorded config: the code and the config
# sources. params.yaml is left out (the run records its content), and so is
# everything the pipeline writes (dvc.lock, metrics/, plots/, reports/, models/,
# data/) and what it never reads (README, tests, benchmarks).
SOURCE_PATHS = ("src/", "conf/", "dvc.yaml", "pyproject.toml", "requirements.lock", "uv.lock")


def source_changes(paths: Iterable[str]) -> list[str]:
    """The paths among `paths` (relative to the repository root, POSIX) that change a run's result."""
    return sorted(
        p for p in paths if any(p == s or (s.endswith("/") and p.startswith(s)) for s in SOURCE_PATHS)
    )


def changed_paths(base: str = "HEAD") -> list[str]:
    """Source files (`SOURCE_PATHS`) differing from commit `base` (staged or not), or new and not ignored."""
    # `:(top)` pathspecs: paths from the repository root, whatever the working folder.
    where = ["--", *(f":(top){s}" for s in SOURCE_PATHS)]
    listed = []
    for cmd in (
        ["git", "diff", "--name-only", base, *where],
        ["git", "ls-files", "--others", "--exclude-standard", "--full-name", *where],
    ):
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=30).stdout
        listed += out.splitlines()
    return [p for p in listed if p]


def git_dirty() -> bool:
    """Whether code or config sources differ from the commit a run records (`SOURCE_PATHS`).

    A run made by `dvc exp run` is compared with its experiment's baseline
    (DVC_EXP_BASELINE_REV): a code change it ran is dirt there, though the
    experiment's own commit, which `aeflow reproduce` uses, keeps it.
    """
    base = os.environ.get("DVC_EXP_BASELINE_REV") or "HEAD"
    try:
        changes = source_changes(changed_paths(base))
    except (OSError, subprocess.SubprocessError):
        return False
    if changes:
        log.info("git_dirty: %s differ from %s", ", ".join(changes[:5]), base)
    return bool(changes)


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
    # A DVC output (cached, maybe pushed): never with credentials in it.
    write_json(path, {"run_id": run_id, "tracking_uri": redact_uri(uri), "experiment_id": experiment_id})


def read_run_info(path: str | Path) -> dict[str, str]:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise TrackingError(f"{path}: cannot read the MLflow run id ({exc}); run `dvc repro train`") from exc


@contextmanager
def resume_run(run_info_path: str | Path, configured_uri: str | None = None) -> Iterator[mlflow.ActiveRun]:
    """The run the train stage created (same store, same run id), reopened for the block.

    The run ends FINISHED after the block, FAILED if it raises. A request to the store that
    still fails after MLflow's own retries (the tracking server, or the artifact store behind
    it, gone) ends the stage with one line naming the store, instead of a traceback.
    """
    info = read_run_info(run_info_path)
    uri = store_uri(tracking_uri(configured_uri))
    preflight(uri)
    mlflow.set_tracking_uri(uri)
    with store_lock(uri):
        active = retry_locked(mlflow.start_run, run_id=info["run_id"])
    try:
        with active:
            yield active
    except mlflow.exceptions.MlflowException as exc:
        shown = redact_uri(uri)
        reason = str(exc).splitlines()[0].replace(uri, shown) if str(exc) else type(exc).__name__
        raise TrackingError(
            f"Logging to MLflow run {info['run_id']} in the store {shown} failed ({reason}). "
            "What the stages before this one wrote is kept: once the store is back, `dvc repro` "
            "runs this stage again, into the same run."
        ) from exc
