"""MLflow's system metrics (CPU, memory, disk, network; GPU where present) while a model trains.

MLflow samples them in a background thread (psutil; pynvml for NVIDIA GPUs)
every `MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL` seconds (default 10) and logs
them to the run as `system/*` metrics. Set `MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING=false`
to turn them off.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

ENABLE_ENV = "MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING"


def enabled() -> bool:
    return os.environ.get(ENABLE_ENV, "true").strip().lower() not in ("0", "false", "no")


@contextmanager
def logged(run_id: str | None, tracking_uri: str | None = None) -> Iterator[None]:
    """Sample system metrics into run `run_id` while the block runs (nothing when `run_id` is None).

    MLflow's own monitor, attached to the run without making it the active run: the run's
    status stays the training's to set. Losing the store while sampling only loses samples;
    whatever the block raises or returns is what the caller sees.
    """
    if run_id is None or not enabled():
        yield
        return
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    monitor = SystemMetricsMonitor(run_id, resume_logging=True, tracking_uri=tracking_uri)
    monitor.start()
    try:
        yield
    finally:
        try:
            monitor.finish()
            _at_least_one_sample(monitor, run_id, tracking_uri)
        except Exception as exc:  # noqa: BLE001 (the training's own logging reports a lost store)
            log.warning("System metrics of run %s not flushed: %s", run_id, exc)


def _at_least_one_sample(monitor, run_id: str, tracking_uri: str | None) -> None:
    """One sample, logged now, when the monitor logged none: its loop publishes only after a
    whole sampling interval, and stops without a word when one status check of the run fails
    (a busy tracking server), so a short or unlucky training would have no system metrics."""
    from mlflow.tracking import MlflowClient

    metrics = MlflowClient(tracking_uri).get_run(run_id).data.metrics
    if any(key.startswith("system/") for key in metrics):
        return
    monitor.collect_metrics()
    monitor.publish_metrics(monitor.aggregate_metrics())
    monitor.mlflow_logger.flush()
