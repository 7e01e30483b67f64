"""What a run was made from, in the fields the MLflow UI shows.

- Inputs: the train, validation and test splits as MLflow datasets ("Datasets
  used"), each with the DVC hash of the data folder as digest, its path as
  source and its size as profile.
- MLflow's system tags: the commit (`mlflow.source.git.commit`), the entry
  point (`mlflow.source.name`), the user, and a one-line description
  (`mlflow.note.content`) written once the test metrics are known.
- The resolved config as an artifact (`CONFIG_ARTIFACT`): what `aeflow
  reproduce` writes back as params.yaml.
"""

from __future__ import annotations

import getpass
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

import mlflow
from mlflow.entities import Dataset, DatasetInput, InputTag
from mlflow.utils.mlflow_tags import (
    MLFLOW_DATASET_CONTEXT,
    MLFLOW_GIT_COMMIT,
    MLFLOW_RUN_NOTE,
    MLFLOW_SOURCE_NAME,
    MLFLOW_SOURCE_TYPE,
    MLFLOW_USER,
)
from omegaconf import DictConfig, OmegaConf

from aeflow.config.params import to_container
from aeflow.tracking import runs

CONFIG_ARTIFACT = "config/params.yaml"
ENTRY_POINT = "aeflow.stages.train"  # the DVC stage that creates the run (`dvc repro` runs it)
# split in the data module -> MLflow's dataset context
SPLIT_CONTEXTS = {"train": "training", "val": "validation", "test": "testing"}


def source_tags(commit: str) -> dict[str, str]:
    """MLflow's own tags for where a run comes from: the UI's Source and Created by fields."""
    tags = {MLFLOW_SOURCE_NAME: ENTRY_POINT, MLFLOW_SOURCE_TYPE: "LOCAL", MLFLOW_GIT_COMMIT: commit}
    try:
        tags[MLFLOW_USER] = getpass.getuser()
    except (KeyError, OSError):  # no login name (e.g. a container user without a passwd entry)
        pass
    return tags


def data_digest(cfg: DictConfig) -> str:
    """DVC's hash of the data folder (from dvc.lock); without one, a hash of the files' MD5s."""
    dvc_hash = runs.dvc_data_hash(cfg.paths.data)
    if dvc_hash != "unknown":
        return dvc_hash
    files = json.dumps(OmegaConf.to_container(cfg.data.files, resolve=True), sort_keys=True)
    return hashlib.md5(files.encode()).hexdigest()  # noqa: S324 (an identifier, not security)


def split_inputs(cfg: DictConfig, sizes: Mapping[str, tuple[int, ...]]) -> list[DatasetInput]:
    """One MLflow dataset per split; `sizes[split]` is the images tensor's shape, (N, H, W)."""
    digest = data_digest(cfg)
    source = json.dumps({"uri": Path(cfg.paths.data).resolve().as_uri()})
    inputs = []
    for split, context in SPLIT_CONTEXTS.items():
        shape = sizes[split]
        profile = {"num_images": int(shape[0]), "image_shape": [int(s) for s in shape[1:]], "dtype": "uint8"}
        dataset = Dataset(
            name=f"{cfg.data.name}-{split}",
            digest=digest,
            source_type="local",
            source=source,
            profile=json.dumps(profile),
        )
        inputs.append(DatasetInput(dataset, tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)]))
    return inputs


def logged_config(cfg: DictConfig) -> str:
    """The resolved config as YAML, the tracking URI without credentials (it is a logged artifact)."""
    tree = to_container(cfg)
    if tree.get("mlflow", {}).get("tracking_uri"):
        tree["mlflow"]["tracking_uri"] = runs.redact_uri(str(tree["mlflow"]["tracking_uri"]))
    return OmegaConf.to_yaml(OmegaConf.create(tree))


def record_inputs(
    client: mlflow.MlflowClient, run_id: str, cfg: DictConfig, splits: Mapping[str, tuple]
) -> None:
    """Log the splits as the run's datasets and the resolved config as `CONFIG_ARTIFACT`.

    `splits` is the data module's {split: (images (N, H, W), labels (N,))}.
    """
    sizes = {split: tuple(images.shape) for split, (images, _) in splits.items()}
    runs.log_inputs(client, run_id, split_inputs(cfg, sizes))
    client.log_text(run_id, logged_config(cfg), CONFIG_ARTIFACT)


def note(cfg: DictConfig, headline: str, value: float) -> str:
    """One line for the run page's description: model, training, data, the headline test metric."""
    model = cfg.model
    encoder = model.get("encoder") or {}
    kind = str(encoder.get("_target_", model._target_)).rsplit(".", 1)[-1]
    layers = "-".join(
        str(n)
        for n in [encoder.get("in_features", ""), *encoder.get("hidden", []), model.latent_dim]
        if n != ""
    )
    from aeflow.data.folder import describe

    optimizer = str(cfg.optimizer._target_).rsplit(".", 1)[-1]
    return (
        f"{kind} {layers} ({model.loss} loss), {optimizer} lr {cfg.optimizer.lr}, "
        f"{cfg.trainer.max_epochs} epochs, seed {cfg.seed}, on {describe(cfg.data)} "
        f"(data {data_digest(cfg)[:8]}): {headline} {value:.4f}"
    )


def describe_run(cfg: DictConfig, headline: str, value: float) -> None:
    """Set the active run's description (`mlflow.note.content`) once the test metrics are known."""
    mlflow.set_tag(MLFLOW_RUN_NOTE, note(cfg, headline, value))
