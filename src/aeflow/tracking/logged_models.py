"""MLflow 3's model-centric view: the best checkpoint as a LoggedModel with its test metrics.

`serving.log_model` logs the best checkpoint as a LoggedModel linked to its run.
`link_metrics` logs the run's test metrics to that model, each tied to the
test dataset the run recorded, so `best` (`mlflow.search_logged_models`)
ranks models across runs and experiments without opening the runs. MLflow
records a model's metric as a run metric linked to the model, so the stage
that computes the test metrics calls it with them instead of logging them to
the run itself (called after the run has them, each appears twice in the run).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import mlflow
from mlflow.entities import LoggedModelStatus

log = logging.getLogger(__name__)

TEST_PREFIX = "test/"


def ready(models: Sequence[Any]) -> list[Any]:
    """The models whose artifacts were all uploaded: an upload that failed (the artifact store
    gone) leaves its model FAILED, and the package stage's next run logs a new one."""
    return [m for m in models if m.status == LoggedModelStatus.READY]


def run_models(run_id: str) -> list[Any]:
    """The READY LoggedModels whose source is run `run_id` (MLflow records the run on each)."""
    experiment = mlflow.MlflowClient().get_run(run_id).info.experiment_id
    return ready(
        mlflow.search_logged_models(
            experiment_ids=[experiment], filter_string=f"source_run_id = '{run_id}'", output_format="list"
        )
    )


def test_dataset(run_id: str) -> Any | None:
    """The run's test-split dataset input (lineage.record_inputs names it `<data>-test`)."""
    inputs = mlflow.MlflowClient().get_run(run_id).inputs.dataset_inputs
    return next((i.dataset for i in inputs if i.dataset.name.endswith("-test")), None)


def link_metrics(run_id: str, metrics: Mapping[str, float] | None = None) -> list[str]:
    """Log the run's test metrics (default: every `test/*` metric of the run) to each of its
    LoggedModels, tied to the run's test dataset; return the model ids."""
    client = mlflow.MlflowClient()
    if metrics is None:
        metrics = {k: v for k, v in client.get_run(run_id).data.metrics.items() if k.startswith(TEST_PREFIX)}
    dataset = test_dataset(run_id)
    ids = []
    for model in run_models(run_id):
        mlflow.log_metrics(dict(metrics), run_id=run_id, model_id=model.model_id, dataset=dataset)
        ids.append(model.model_id)
    log.info("test metrics of run %s linked to its logged models %s", run_id, ids)
    return ids


def best(experiment_ids: Sequence[str], metric: str, direction: str = "minimize") -> Any | None:
    """The READY LoggedModel with the best `metric` across `experiment_ids` (None when none has it)."""
    found = mlflow.search_logged_models(
        experiment_ids=list(experiment_ids),
        order_by=[{"field_name": f"metrics.{metric}", "ascending": direction == "minimize"}],
        output_format="list",
    )
    with_metric = [m for m in ready(found) if any(x.key == metric for x in (m.metrics or []))]
    return with_metric[0] if with_metric else None
