"""Each stage's `params:` in dvc.yaml cover every config key its code reads.

Every stage runs for real, in pipeline order, on a config whose every leaf is an
interpolation that records its key when read; a key read but not declared means a
change to it would not rerun the stage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf

from aeflow.config.params import compose
from tests.conftest import REPO, make_synthetic_idx
from tests.helpers import TINY
from tests.image_folders import write_classes

RESOLVER = "aeflow_test_record"
# Read but deliberately not params (dvc.yaml says why): the mirrors and the wheel are only *where*
# the download stage looks; *what* it must get is `data.files` and, for `evaluate.ood`, each
# set's catalogue entry (names and MD5s).
# data.path (data=folder) is the images folder: a dependency (paths.data_source), not a setting.
# data.in_memory (packed data) says whether the arrays are read into memory or memory-mapped: the
# same values either way, so no stage's output depends on it.
EVERY_STAGE = ["data.in_memory"]
NOT_PARAMS = {"download": ["data.source", "evaluate.ood_mirrors", "data.path"]}
READ: set[str] = set()


def declared_params(stage: str) -> list[str]:
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]
    return [p for p in spec.get("params", []) if isinstance(p, str)]


def recording(cfg: DictConfig) -> DictConfig:
    """`cfg` with each leaf (a list counts as a leaf) replaced by an interpolation that records its key."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    values: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> Any:
        if isinstance(node, dict):
            return {k: walk(v, f"{prefix}{k}.") for k, v in node.items()}
        key = prefix[:-1]
        values[key] = node
        return f"${{{RESOLVER}:'{key}'}}"

    def read(key: str) -> Any:
        READ.add(key)
        value = values[key]
        return OmegaConf.create(value) if isinstance(value, list) else value

    OmegaConf.register_new_resolver(RESOLVER, read, replace=True)
    return OmegaConf.create(walk(plain, ""))


def through_interpolation(declared: list[str], data: str) -> list[str]:
    """Keys that a declared `data.*` param repeats by interpolation in conf/data/`data`.yaml
    (folder.yaml's `files` holds `${data.image_size}`, ...): a change to one changes the param."""
    raw = yaml.safe_load((REPO / "conf" / "data" / f"{data}.yaml").read_text())
    found = []
    for param in declared:
        group, _, key = param.partition(".")
        if group == "data" and isinstance(raw.get(key), dict):
            found += [v[2:-1] for v in raw[key].values() if isinstance(v, str) and v.startswith("${")]
    return found


def undeclared(read: set[str], declared: list[str]) -> list[str]:
    # `paths` are where files go (the deps and outs), not settings of the result.
    return sorted(
        k
        for k in read
        if not k.startswith("paths.") and not any(k == p or k.startswith(p + ".") for p in declared)
    )


def test_recording_config_sees_reads_inside_lists_and_nested_nodes():
    READ.clear()
    cfg = recording(OmegaConf.create({"a": {"b": 1, "c": [1, 2]}, "d": "x"}))
    assert cfg.a.b == 1 and list(cfg.a.c) == [1, 2] and isinstance(cfg.a.c, ListConfig)
    assert READ == {"a.b", "a.c"}
    assert undeclared(READ, ["a.c"]) == ["a.b"]


# Each stage in the order the pipeline runs them: every stage before it has run on the same config.
STAGES = ["download", "baselines", "train", "evaluate", "package", "visualize"]
# train logs the whole config (MLflow params, the resume key), so it reads every key by design:
# it runs for the stages after it, and its own reads are not checked here.
CHECKED = {"download", "baselines", "evaluate", "package", "visualize"}
OOD = "synthetic_ood"


def _with_ood(cfg: DictConfig, tmp_path: Path, monkeypatch) -> None:
    """evaluate.ood naming a catalogue entry for tiny synthetic files, in a conf/data/ of the
    test's own (the stages read the catalogue relative to the working directory)."""
    source = tmp_path / "ood-source"
    files = make_synthetic_idx(source, n_train=10, n_test=30, seed=1, gz=True)
    (tmp_path / "conf" / "data").mkdir(parents=True)
    entry = {
        "name": OOD,
        "files": files,
        "source": {"mirrors": [source.as_uri() + "/"], "pypi_fallback": None},
    }
    (tmp_path / "conf" / "data" / f"{OOD}.yaml").write_text(yaml.safe_dump(entry))
    monkeypatch.chdir(tmp_path)
    cfg.evaluate.ood = [OOD]


def _folder_data(cfg: DictConfig, tmp_path: Path) -> DictConfig:
    """The same tiny config on data=folder: real PNG folders of two classes."""
    write_classes(tmp_path / "images", {"a": 40, "b": 40})
    folder = compose([*TINY, "data=folder", f"data.path={tmp_path / 'images'}", "data.val_size=0.2"])
    folder.paths, folder.mlflow = cfg.paths, cfg.mlflow
    folder.paths.data = str(tmp_path / "out" / "packed")
    folder.data.batch_size = 16
    return folder


VARIANTS = {
    "mnist": lambda cfg, tmp_path, monkeypatch: cfg,
    "classes": lambda cfg, tmp_path, monkeypatch: OmegaConf.merge(cfg, {"data": {"classes": [0, 1]}}),
    "ood": lambda cfg, tmp_path, monkeypatch: _with_ood(cfg, tmp_path, monkeypatch) or cfg,
    "folder": lambda cfg, tmp_path, monkeypatch: _folder_data(cfg, tmp_path),
}


# Trains through MLflow, whose run records start processes (git, uname): not a unit test.
@pytest.mark.integration
@pytest.mark.parametrize(
    "variant",
    VARIANTS,
)
def test_stages_read_only_declared_params(variant, tiny_cfg, tmp_path, monkeypatch):
    """Every stage, on the default data and on each branch a config can take (a subset of the
    classes, outside sets, your own image folders): each key read is one its stage declares."""
    import importlib

    cfg = VARIANTS[variant](tiny_cfg, tmp_path, monkeypatch)
    for stage in STAGES:
        READ.clear()
        recorded = recording(cfg)
        monkeypatch.setattr("aeflow.config.params.load_params", lambda *a, _cfg=recorded, **k: _cfg)
        importlib.import_module(f"aeflow.stages.{stage}").main()
        if stage not in CHECKED:
            continue
        assert READ, f"{stage}: the recording config saw no reads: the stage did not use it"
        declared = declared_params(stage)
        aliases = through_interpolation(declared, cfg.data.name)
        missing = undeclared(READ, declared + aliases + EVERY_STAGE + NOT_PARAMS.get(stage, []))
        assert not missing, f"dvc.yaml stage {stage!r} reads {missing} ({variant}) but does not declare them"
