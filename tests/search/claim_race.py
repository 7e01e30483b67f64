"""`python tests/search/claim_race.py search ARGS...`: `aeflow search` as a worker forced into the claim race.

The workers test starts real worker processes through this file so that they
contend for the study's claim lock on every decision, instead of by chance:

- every claim of the worker loop (`ClaimLock.acquire`: is there still a
  trial to run? then start it) first waits until each other worker has
  reached the same claim (its n-th), has left the loop, or has left the
  study, so all of them ask for the claim at the same moment;
- the claim before the summary (the second `ClaimLock.held`: does a trial
  still run? if not, log the best trial and write the preset) first waits
  until each other worker has left the loop too. Every trial has finished
  then, so each worker finds none running, as happens unforced when one
  worker checks after the other's last trial finished but before the other
  checks itself; only the study's record of its summary keeps both from
  summarising. The claim around the parent run (the first `held`) does not wait;
- `Study.ask`, which creates the trial while the claim is held, first sleeps
  HOLD_S, so a worker that got past a missing lock would count the trials
  before the holder's new one exists and start one too many.

Each claim appends `<pid> <claim number> <seconds waited for the lock>` to
$AEFLOW_TEST_RACE_DIR/claims.log: the test reads from it that the workers
did wait for each other's claims.
"""

from __future__ import annotations

import atexit
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import optuna

from aeflow.search import storage

RACE_DIR_ENV = "AEFLOW_TEST_RACE_DIR"
PARTIES_ENV = "AEFLOW_TEST_RACE_PARTIES"
HOLD_S = 1.0
BARRIER_TIMEOUT_S = 300.0
CLAIMS_LOG = "claims.log"
SUMMARY = "summary"  # the mark of a worker at its summary claim


def read_claims(folder: Path) -> list[tuple[int, int, float]]:
    """(pid, claim number, seconds waited for the lock) of every claim recorded in `folder`."""
    lines = (folder / CLAIMS_LOG).read_text().split()
    return [(int(p), int(n), float(w)) for p, n, w in zip(lines[::3], lines[1::3], lines[2::3], strict=True)]


def _wait_for_peers(folder: Path, claim: int | str, parties: int) -> None:
    """Mark this worker at `claim`; wait until every other one is there, at the summary, or gone."""
    me = os.getpid()
    (folder / f"{me}.{claim}").touch()
    deadline = time.monotonic() + BARRIER_TIMEOUT_S
    while True:
        peers = [int(p.stem) for p in folder.glob("*.joined") if int(p.stem) != me]
        if len(peers) + 1 >= parties and all(
            any((folder / f"{p}.{mark}").exists() for mark in (claim, SUMMARY, "left")) for p in peers
        ):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"claim {claim}: the other workers did not reach it in {BARRIER_TIMEOUT_S} s")
        time.sleep(0.01)


def install(folder: Path, parties: int) -> None:
    """Make this process's loop claims meet the other workers' claims, and its trial creation slow."""
    (folder / f"{os.getpid()}.joined").touch()
    atexit.register(lambda: (folder / f"{os.getpid()}.left").touch())
    claims = helds = 0
    acquire, close, ask = storage.ClaimLock.acquire, storage.Worker.close, optuna.Study.ask

    def meeting_acquire(self: storage.ClaimLock) -> None:
        nonlocal claims
        claims += 1
        _wait_for_peers(folder, claims, parties)
        start = time.monotonic()
        acquire(self)
        with open(folder / CLAIMS_LOG, "a") as log:  # one short O_APPEND write: lines never interleave
            log.write(f"{os.getpid()} {claims} {time.monotonic() - start:.3f}\n")

    @contextmanager
    def held_meeting_at_summary(self: storage.ClaimLock) -> Iterator[None]:
        nonlocal helds
        helds += 1
        if helds == 2:  # the summary's claim: after the worker loop
            _wait_for_peers(folder, SUMMARY, parties)
        acquire(self)
        try:
            yield
        finally:
            self.release()

    def leaving_close(self: storage.Worker) -> None:
        close(self)
        (folder / f"{os.getpid()}.left").touch()

    def slow_ask(self: optuna.Study, *args, **kwargs) -> optuna.Trial:
        time.sleep(HOLD_S)
        return ask(self, *args, **kwargs)

    storage.ClaimLock.acquire = meeting_acquire
    storage.ClaimLock.held = held_meeting_at_summary
    storage.Worker.close = leaving_close
    optuna.Study.ask = slow_ask


if __name__ == "__main__":
    install(Path(os.environ[RACE_DIR_ENV]), int(os.environ[PARTIES_ENV]))
    from aeflow.cli import main

    main(sys.argv[1:])
