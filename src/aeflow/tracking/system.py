"""MLflow's system metrics (CPU, memory, disk, network; GPU where present) while a model trains.

MLflow samples them in a background thread (psutil; pynvml for NVIDIA GPUs)
every `MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL` seconds (default 10) and logs
them to the run as `system/*` metrics. Set `MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING=false`
to turn them off.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import mlflow

ENABLE_ENV = "MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING"


def enabled() -> bool:
    return os.environ.get(ENABLE_ENV, "true").strip().lower() not in ("0", "false", "no")


@contextmanager
def logged(run_id: str | None) -> Iterator[None]:
    """Sample system metrics into run `run_id` while the block runs (nothing when `run_id` is None).

    The run is made MLflow's active run for the block, which is how MLflow
    attaches its monitor; the run ends (FINISHED, or FAILED on an exception)
    as the block ends, as the Lightning logger's run does after `fit`.
    """
    if run_id is None or not enabled():
        yield
        return
    with mlflow.start_run(run_id=run_id, log_system_metrics=True):
        yield
