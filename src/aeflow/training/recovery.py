"""Surviving interrupted training: a resume folder DVC never deletes, and logging that cannot kill a run.

DVC deletes a stage's outputs before it re-runs the stage, so checkpoints a
later run could resume from cannot live in `paths.checkpoints`. They live in
`paths.resume/<key>/` instead (not a DVC output, git-ignored), where `<key>`
hashes the config (minus where runs are tracked) and the package's code:

- a run killed mid-epoch (SIGKILL, OOM, a lost machine) leaves `last.ckpt`
  (written atomically by `checkpoints.AtomicCheckpointIO`) and `<key>.json`
  (the MLflow run id); the next run with the same config and code resumes
  from that checkpoint into the same MLflow run;
- a different config or changed code gives a different key, so a stale
  checkpoint is never resumed; a finished run deletes its folder, and a
  diverged one (non-finite loss) too, since resuming it would diverge again;
- an exclusive lock on `<key>.lock` stops two processes training the same
  config in the same folder from sharing a checkpoint.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import MLFlowLogger

from aeflow.errors import TrainingError
from aeflow.io import remove_temporaries, write_json
from aeflow.models.weights import LAST, is_loadable
from aeflow.tracking import runs as tracking

log = logging.getLogger(__name__)

# Not part of the key: where runs are tracked does not change what is trained.
UNKEYED_SECTIONS = ("mlflow",)
# The aeflow package: models, data and training code all decide what a checkpoint holds.
PACKAGE = Path(__file__).resolve().parents[1]


def code_hash(root: Path | None = None) -> str:
    """Hash of the source under `root` (default: the aeflow package): changed code never resumes an
    old checkpoint."""
    root = root or PACKAGE
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def resume_key(cfg: DictConfig) -> str:
    tree = OmegaConf.to_container(cfg, resolve=True)
    for section in UNKEYED_SECTIONS:
        tree.pop(section, None)
    blob = json.dumps(tree, sort_keys=True, default=str) + code_hash()
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class ResumeDir:
    """`paths.resume/<key>/`: the checkpoints and MLflow run id of one unfinished training."""

    def __init__(self, root: str | Path, key: str) -> None:
        self.root, self.key = Path(root), key
        self.path = self.root / key
        self._lock_fh: Any = None

    @classmethod
    def for_config(cfg_cls, cfg: DictConfig) -> ResumeDir:
        return cfg_cls(cfg.paths.resume, resume_key(cfg))

    def lock(self) -> None:
        """Hold `<key>.lock` until the process ends (or `release`); fail if another process holds it."""
        self.root.mkdir(parents=True, exist_ok=True)
        fh = open(self.root / f"{self.key}.lock", "a")  # noqa: SIM115 (held for the whole training)
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            raise TrainingError(
                f"Another process is training this exact config in this folder (lock {self.root / self.key}"
                ".lock is held). Wait for it, or give this run other paths or another seed."
            ) from None
        self._lock_fh = fh
        # Held: no other process writes here now, so a temporary file is a killed writer's.
        for stale in remove_temporaries(self.path):
            log.warning("Removed %s, left by a process killed while writing a checkpoint", stale)

    @contextmanager
    def held(self, enabled: bool = True) -> Iterator[ResumeDir]:
        """`lock` for the duration of the block (when `enabled`: rank zero only), released on every exit."""
        if enabled:
            self.lock()
        try:
            yield self
        finally:
            self.release()

    def release(self) -> None:
        if self._lock_fh is not None:
            fcntl.flock(self._lock_fh, fcntl.LOCK_UN)
            self._lock_fh.close()
            self._lock_fh = None
            # The (empty) lock file stays: unlinking it would let two processes lock two inodes.

    @property
    def last(self) -> Path:
        return self.path / f"{LAST}.ckpt"

    def checkpoint(self) -> Path | None:
        """The checkpoint to resume from: a complete `last.ckpt` that loads weights-only, else None."""
        if not self.last.is_file():
            return None
        if not is_loadable(self.last):
            log.warning(
                "Ignoring %s: not a complete weights-only checkpoint; training from the start", self.last
            )
            return None
        return self.last

    def state(self) -> dict[str, Any]:
        try:
            state = json.loads(self.state_file.read_text())
        except (OSError, json.JSONDecodeError):
            return {}
        return state if isinstance(state, dict) and state.get("key") == self.key else {}

    def write_state(self, **state: Any) -> None:
        write_json(self.state_file, {"key": self.key, **state})

    @property
    def state_file(self) -> Path:
        # Beside the checkpoint folder, not in it: Lightning warns about non-empty folders.
        return self.root / f"{self.key}.json"

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        self.state_file.unlink(missing_ok=True)


def checkpoint_epochs(path: Path) -> int:
    """How many epochs a Lightning checkpoint has completed (it is saved at an epoch's end)."""
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    return int(state.get("epoch", -1)) + 1


class TolerantMLFlowLogger(MLFlowLogger):
    """An MLFlowLogger whose failures are recorded instead of raised.

    If the tracking server drops out mid-run, training goes on and its
    checkpoints are still written; the first failure is kept in `failure`,
    later calls are skipped (so MLflow's retries are waited out once, not once
    per epoch), and `training.train` reports it as a TrackingError at the end.
    SQLite's "database is locked" is retried first, and reported if it persists.
    """

    failure: BaseException | None = None

    def _guard(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self.failure is not None:
            return None
        try:
            return tracking.retry_locked(fn, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001 (recorded and reported by train())
            self.failure = exc
            log.error(
                "MLflow logging failed (%s: %s); training continues, checkpoints are kept",
                type(exc).__name__,
                exc,
            )
            return None

    def log_metrics(self, metrics, step=None) -> None:
        self._guard(super().log_metrics, metrics, step)

    def log_hyperparams(self, params) -> None:
        self._guard(super().log_hyperparams, params)

    def finalize(self, status: str = "success") -> None:
        self._guard(super().finalize, status)

    def after_save_checkpoint(self, checkpoint_callback) -> None:
        self._guard(super().after_save_checkpoint, checkpoint_callback)


def describe_failure(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
