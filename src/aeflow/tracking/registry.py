"""The MLflow model registry: the trained model as a version of a named model.

The package stage calls `register_if_configured` once the model is logged and the test metrics are
known, so a version carries the numbers a reviewer promotes it on (tags and
description), plus the git commit and DVC experiment it came from.
Promotion is an alias: `models:/<name>@champion` (see README, "Serving").
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Mapping
from typing import Any

import mlflow
from omegaconf import DictConfig

from aeflow.tracking import runs as tracking

log = logging.getLogger(__name__)

MODEL_ARTIFACT = "model"  # the name serving.log_model logs under
# Run tags copied onto the version: where it came from.
PROVENANCE_TAGS = ("git_commit", "git_dirty", "data_dvc_md5", "dvc_exp_name", "dvc_baseline_rev")
# Metrics quoted in the version's description, when present.
HEADLINE = ("test.sq_err_per_image", "test.mse", "test.bce", "pca.sq_err_per_image")


def metric_tags(results: Mapping[str, Any]) -> dict[str, str]:
    """{'test': {'mse': 0.01}} -> {'test.mse': '0.01'}: every numeric leaf, as a tag."""
    return {
        k: repr(float(v))
        for k, v in tracking.flatten(results).items()
        if isinstance(v, numbers.Real) and not isinstance(v, bool)
    }


def describe(tags: Mapping[str, str], run_id: str) -> str:
    lines = [f"Autoencoder from MLflow run {run_id}."]
    lines += [f"{k} = {float(tags[k]):.6g}" for k in HEADLINE if k in tags]
    return "\n".join(lines)


def register(
    name: str, run_id: str, results: Mapping[str, Any], client: mlflow.MlflowClient | None = None
) -> Any:
    """Register `runs:/<run_id>/model` as a new version of `name`, tagged with `results`."""
    client = client or mlflow.MlflowClient()
    version = mlflow.register_model(f"runs:/{run_id}/{MODEL_ARTIFACT}", name)
    tags = metric_tags(results)
    run_tags = client.get_run(run_id).data.tags
    tags.update({k: run_tags[k] for k in PROVENANCE_TAGS if k in run_tags})
    for key, value in tags.items():
        client.set_model_version_tag(name, version.version, key, value)
    client.update_model_version(name, version.version, description=describe(tags, run_id))
    log.info("registered %s version %s (runs:/%s/%s)", name, version.version, run_id, MODEL_ARTIFACT)
    return client.get_model_version(name, version.version)


def register_if_configured(cfg: DictConfig, results: Mapping[str, Any]) -> Any | None:
    """The package stage's hook: register the run's model when `mlflow.register_model` names one."""
    name = cfg.mlflow.get("register_model")
    if not name:
        return None
    if not cfg.mlflow.get("log_model", True):
        log.warning("mlflow.register_model=%s but mlflow.log_model=false: nothing to register", name)
        return None
    info = tracking.read_run_info(cfg.paths.run_info)
    uri = tracking.tracking_uri(cfg.mlflow.tracking_uri)
    mlflow.set_tracking_uri(uri)
    return register(name, info["run_id"], results, mlflow.MlflowClient(uri))
