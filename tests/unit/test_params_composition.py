"""params.yaml records the overrides it was composed with; a stage can tell when it is stale."""

from __future__ import annotations

import shutil
from pathlib import Path

from omegaconf import OmegaConf

from aeflow.config.params import compose, composition_drift, params_text, recorded_overrides
from tests.helpers import REPO


def project_with_params(tmp_path: Path, overrides: list[str]) -> Path:
    shutil.copytree(REPO / "conf", tmp_path / "conf")
    params = tmp_path / "params.yaml"
    params.write_text(params_text(compose(overrides, tmp_path / "conf"), overrides))
    return params


def test_params_yaml_records_its_overrides_and_stays_plain_yaml(tmp_path):
    overrides = ["model.latent_dim=64", "data.source.mirrors=[file:///tmp/m/]"]
    params = project_with_params(tmp_path, overrides)
    assert recorded_overrides(params) == overrides
    assert OmegaConf.load(params).model.latent_dim == 64


def test_a_composition_with_its_recorded_overrides_is_current(tmp_path, monkeypatch):
    params = project_with_params(tmp_path, ["model.latent_dim=64", "optimizer=adam"])
    monkeypatch.chdir(tmp_path)
    assert composition_drift(params) is None


def test_an_edit_to_conf_after_composing_names_the_key_both_values_and_the_fix(tmp_path, monkeypatch):
    params = project_with_params(tmp_path, ["model.latent_dim=64"])
    config = tmp_path / "conf" / "config.yaml"
    config.write_text(config.read_text().replace("\nseed: 42\n", "\nseed: 7\n"))
    monkeypatch.chdir(tmp_path)
    drift = composition_drift(params)
    assert drift is not None
    assert "with overrides ['model.latent_dim=64']" in drift
    assert f"seed: 42 in {params}, 7 from conf/" in drift
    assert "make run" in drift and "dvc exp run -S" in drift
    assert "latent_dim" not in drift.split(":", 1)[1].split(". ")[0]  # the recorded override is not a drift


def test_a_hand_edited_params_yaml_is_reported(tmp_path, monkeypatch):
    params = project_with_params(tmp_path, [])
    params.write_text(params.read_text().replace("max_epochs: 20", "max_epochs: 3"))
    monkeypatch.chdir(tmp_path)
    assert f"trainer.max_epochs: 3 in {params}, 20 from conf/" in composition_drift(params)


def test_params_composed_by_dvc_exp_run_are_trusted(tmp_path, monkeypatch):
    # DVC's Hydra integration writes no header (its -S overrides are unknown here) and sets
    # DVC_EXP_NAME for the stages it runs right after composing.
    params = tmp_path / "params.yaml"
    shutil.copytree(REPO / "conf", tmp_path / "conf")
    params.write_text(OmegaConf.to_yaml(compose(["model.latent_dim=64"], tmp_path / "conf")))
    monkeypatch.chdir(tmp_path)
    assert "model.latent_dim: 64" in composition_drift(params)
    monkeypatch.setenv("DVC_EXP_NAME", "exp-1")
    assert composition_drift(params) is None
