"""Each stage's `params:` in dvc.yaml cover every config key its code reads.

The stage runs for real (after a tiny training) on a config whose every leaf is
an interpolation that records its key when read; a key read but not declared
means a change to it would not rerun the stage.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf

from aeflow.training.train import train
from tests.conftest import REPO

RESOLVER = "aeflow_test_record"
# Read but deliberately not params (dvc.yaml says why): the mirrors and the wheel are only *where*
# the download stage looks; *what* it must get is `data.files` and, for `evaluate.ood`, each
# set's catalogue entry (names and MD5s).
NOT_PARAMS = {"download": ["data.source", "evaluate.ood_mirrors"]}
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


# What each stage needs done before it (its upstream in dvc.yaml), after the synthetic data.
UPSTREAM = {
    "download": [],
    "baselines": [],
    "evaluate": ["baselines"],
    "package": ["baselines", "evaluate"],
    "visualize": ["baselines", "evaluate"],
}


@pytest.mark.parametrize("stage", list(UPSTREAM))
def test_stage_reads_only_declared_params(stage, tiny_cfg, monkeypatch):
    import importlib

    if stage not in ("download", "baselines"):  # the synthetic data is in place; these need a model
        train(tiny_cfg)
    monkeypatch.setattr("aeflow.config.params.load_params", lambda *a, **k: tiny_cfg)
    for before in UPSTREAM[stage]:
        importlib.import_module(f"aeflow.stages.{before}").main()
    READ.clear()
    cfg = recording(tiny_cfg)
    monkeypatch.setattr("aeflow.config.params.load_params", lambda *a, **k: cfg)
    importlib.import_module(f"aeflow.stages.{stage}").main()
    assert READ, "the recording config saw no reads: the stage did not use it"
    missing = undeclared(READ, declared_params(stage) + NOT_PARAMS.get(stage, []))
    assert not missing, f"dvc.yaml stage {stage!r} reads {missing} but does not list them in params"
