"""Where a study lives, and how the processes sharing it stay out of each other's way.

- The storage: a journal file (`searches/<study>.journal`; safe for several
  processes on one machine, or on a shared file system) unless an RDB URL is
  given (`--storage` or `AEFLOW_SEARCH_STORAGE`, e.g. PostgreSQL for several
  machines), whose trials record Optuna heartbeats so another host's dead
  worker's trial is failed by Optuna itself.
- A claim lock (`searches/<study>/claim.lock`) serialises "is there still a
  trial to run? then start it" between the processes of one machine, so a
  study of N trials runs N, not one per process too many.
- Each worker holds an exclusive lock on `searches/<study>/workers/<id>.lock`
  for as long as it lives, and tags its trials with its id. The kernel drops
  the lock when the process dies, even by SIGKILL, so a RUNNING trial whose
  worker's lock is free was interrupted: it is marked FAILED.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import optuna
from optuna.storages import BaseStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState

log = logging.getLogger(__name__)

STORAGE_ENV = "AEFLOW_SEARCH_STORAGE"
SEARCH_ROOT = Path("searches")
# RDB storages: a trial whose worker has not beaten for GRACE_S is failed by Optuna.
HEARTBEAT_S = 30
GRACE_S = 120
WORKER_ATTR = "worker"


def open_storage(study: str, url: str | None = None, root: Path = SEARCH_ROOT) -> BaseStorage:
    """The study's storage: an RDB URL (`--storage`, else $AEFLOW_SEARCH_STORAGE), else a journal file.

    A value without `://` is a journal file path.
    """
    url = url or os.environ.get(STORAGE_ENV) or None
    if url and "://" in url:
        return RDBStorage(url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S)
    path = Path(url) if url else root / f"{study}.journal"
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def describe(storage: BaseStorage, study: str, url: str | None, root: Path = SEARCH_ROOT) -> str:
    """The storage as a user would pass it again (credentials hidden)."""
    from aeflow.tracking.runs import redact_uri

    url = url or os.environ.get(STORAGE_ENV) or None
    if isinstance(storage, JournalStorage):
        return str(Path(url) if url else root / f"{study}.journal")
    return redact_uri(url or "")


@contextmanager
def _flock(path: Path, blocking: bool = True) -> Iterator[IO[str] | None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield None
            return
        try:
            yield fh
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class ClaimLock:
    """`<folder>/claim.lock`, held while a worker decides whether to start a trial and starts it.

    The objective releases it as soon as its trial is tagged with its worker,
    so it is never held while training. `release` may be called more than once.
    """

    def __init__(self, folder: Path) -> None:
        self.path = folder / "claim.lock"
        self._held: IO[str] | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a")  # noqa: SIM115 (closed in release)
        fcntl.flock(fh, fcntl.LOCK_EX)
        self._held = fh

    def release(self) -> None:
        if self._held is not None:
            fcntl.flock(self._held, fcntl.LOCK_UN)
            self._held.close()
            self._held = None

    @contextmanager
    def held(self) -> Iterator[None]:
        self.acquire()
        try:
            yield
        finally:
            self.release()


class Worker:
    """This process as a worker of one study: an id and a lock held until the process ends."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder / "workers"
        self.id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.folder.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.folder / f"{self.id}.lock", "a")  # noqa: SIM115 (held for the process's life)
        fcntl.flock(self._fh, fcntl.LOCK_EX)

    def close(self) -> None:
        fcntl.flock(self._fh, fcntl.LOCK_UN)
        self._fh.close()
        (self.folder / f"{self.id}.lock").unlink(missing_ok=True)


def worker_alive(folder: Path, worker_id: str) -> bool | None:
    """True/False for a worker of this machine; None when its lock file is not here (another host)."""
    path = folder / "workers" / f"{worker_id}.lock"
    if not path.is_file():
        return None
    with _flock(path, blocking=False) as fh:
        alive = fh is None
    if not alive:
        path.unlink(missing_ok=True)
    return alive


def fail_interrupted(
    study: optuna.Study, storage: BaseStorage, folder: Path
) -> list[optuna.trial.FrozenTrial]:
    """Mark FAILED the RUNNING trials whose worker died; call with the claim lock held.

    A trial not yet tagged with its worker was created by a worker that died
    holding the claim lock (it tags the trial before releasing it), so it is
    interrupted too; with an RDB storage another machine's worker may be
    tagging it right now, and Optuna's heartbeat decides instead.
    """
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if isinstance(storage, RDBStorage):  # trials of other machines whose heartbeat stopped
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        now_failed = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}
        stale = [t for t in running if t.number in now_failed]
        running = [t for t in running if t.number not in now_failed]
    else:
        stale = []
    failed = list(stale)
    for trial in running:
        worker = trial.user_attrs.get(WORKER_ATTR)
        if worker is None:
            dead = isinstance(storage, JournalStorage)
        else:
            dead = worker_alive(folder, worker) is False
        if dead:
            log.warning(
                "Trial %d was left RUNNING by worker %s, which is gone: marking it FAILED",
                trial.number,
                worker or "(unknown)",
            )
            storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            failed.append(trial)
    return failed
