"""Lineage and reproduction, the parts without a pipeline: the dirtiness rule, the comparison table,
the run's datasets, system tags and description."""

from __future__ import annotations

import json
import math

import pytest
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT, MLFLOW_GIT_COMMIT, MLFLOW_SOURCE_NAME

from aeflow.tracking import lineage
from aeflow.tracking.reproduce import (
    Row,
    basis_for,
    compare,
    compared_keys,
    format_table,
    judge,
    mismatched_params,
)
from aeflow.tracking.runs import source_changes


@pytest.mark.parametrize(
    "path",
    [
        "src/aeflow/models/components.py",
        "src/aeflow/new_module.py",
        "conf/experiment/tutorial.yaml",
        "dvc.yaml",
        "pyproject.toml",
        "requirements.lock",
        "uv.lock",
    ],
)
def test_a_changed_code_or_config_source_is_dirty(path):
    assert source_changes([path]) == [path]


@pytest.mark.parametrize(
    "path",
    # params.yaml is recorded in the run; the rest are pipeline outputs or never read by a stage.
    [
        "params.yaml",
        "dvc.lock",
        "metrics/train.json",
        "plots/loss.csv",
        "reports/report.md",
        "models/run.json",
        "data/raw/.gitignore",
        "README.md",
        "tests/unit/test_io.py",
        "benchmarks/bench.py",
        "srcs/x.py",
        "dvc.yaml.bak",
    ],
)
def test_recorded_config_and_pipeline_outputs_are_not_dirty(path):
    assert source_changes([path]) == []


def test_compare_flags_a_changed_and_a_missing_metric():
    original = {"test/mse": 0.25, "test/psnr": 20.0, "pca/mse": 0.5}
    reproduced = {"test/mse": 0.25, "test/psnr": 20.5}
    rows = {r.metric: r for r in compare(original, reproduced, original)}
    assert rows["test/mse"].matches(0.0) and rows["test/mse"].difference == 0
    assert not rows["test/psnr"].matches(0.0) and rows["test/psnr"].difference == pytest.approx(0.5)
    assert rows["test/psnr"].matches(0.03) and not rows["test/psnr"].matches(0.02)  # 0.5 / 20 = 0.025
    assert not rows["pca/mse"].matches(1.0) and rows["pca/mse"].difference is None


def test_nan_matches_only_nan():
    assert Row("m", math.nan, math.nan).matches(0.0)
    assert not Row("m", math.nan, 1.0).matches(0.0) and not Row("m", 1.0, math.nan).matches(0.5)


def test_the_table_shows_every_value_and_the_verdict():
    rows = compare(
        {"test/mse": 0.012345678901, "test/ssim": 0.9},
        {"test/mse": 0.012345678901, "test/ssim": 0.8},
        ["test/mse", "test/ssim"],
    )
    same = basis_for(same_numerics=True, rtol=None, seeds=0)
    table = format_table(rows, judge(rows, same), same)
    lines = table.splitlines()
    assert lines[0].split() == ["metric", "original", "reproduced", "difference", "match"]
    assert lines[1].split() == ["test/mse", "0.0123456789", "0.0123456789", "0", "yes"]
    assert lines[2].split() == ["test/ssim", "0.9", "0.8", "-0.1", "NO"]
    assert lines[-1] == "NOT reproduced: 1 of 2 test metrics differ (same numerics fingerprint: exact)"
    rtol = basis_for(same_numerics=False, rtol=1e-6, seeds=0)
    assert (
        format_table(rows[:1], judge(rows[:1], rtol), rtol).splitlines()[-1]
        == "exact: all 1 test metrics match (rtol 1e-06)"
    )


def test_compared_keys_are_the_evaluate_metrics_and_the_originals_in_their_groups():
    evaluated = {"test": {"mse": 1.0, "by_digit": {"0": 2.0}}, "pca": {"mse": 3.0}}
    original = {"test/mse": 1.0, "test/extra": 5.0, "train/loss": 0.1, "train_time_s": 9.0}
    assert compared_keys(evaluated, original) == {"test/mse", "test/by_digit/0", "pca/mse", "test/extra"}


def test_a_config_that_differs_from_the_logged_params_is_named():
    config = {"seed": 42, "model": {"latent_dim": 30, "hidden": [256]}, "mlflow": {"tracking_uri": "x"}}
    params = {"seed": "42", "model.latent_dim": "32", "model.hidden": "[256]", "mlflow.tracking_uri": "***"}
    assert mismatched_params(config, params) == ["model.latent_dim"]
    assert mismatched_params(config, {**params, "model.latent_dim": "30"}) == []


def test_splits_become_mlflow_datasets_with_the_dvc_hash_and_sizes(tiny_cfg, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  download:\n    outs:\n"
        f"    - path: {tiny_cfg.paths.data}\n      md5: 0123456789abcdef0123456789abcdef.dir\n"
    )
    sizes = {"train": (100, 28, 28), "val": (20, 28, 28), "test": (40, 28, 28)}
    inputs = lineage.split_inputs(tiny_cfg, sizes)
    assert [i.dataset.name for i in inputs] == ["mnist-train", "mnist-val", "mnist-test"]
    assert [i.tags[0].key for i in inputs] == [MLFLOW_DATASET_CONTEXT] * 3
    assert [i.tags[0].value for i in inputs] == ["training", "validation", "testing"]
    assert {i.dataset.digest for i in inputs} == {"0123456789abcdef0123456789abcdef.dir"}
    assert [json.loads(i.dataset.profile)["num_images"] for i in inputs] == [100, 20, 40]
    assert json.loads(inputs[0].dataset.source)["uri"].startswith("file://")


def test_without_dvc_lock_the_digest_still_follows_the_data_files(tiny_cfg, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = lineage.data_digest(tiny_cfg)
    tiny_cfg.data.files.test_labels.md5 = "0" * 32
    assert len(first) == 32 and lineage.data_digest(tiny_cfg) != first


def test_system_tags_and_the_description(tiny_cfg):
    tags = lineage.source_tags("abc123")
    assert tags[MLFLOW_GIT_COMMIT] == "abc123" and tags[MLFLOW_SOURCE_NAME] == "aeflow.stages.train"
    text = lineage.note(tiny_cfg, "test squared error per image", 12.345678)
    assert "\n" not in text and text.endswith("test squared error per image 12.3457")
    assert "MLPEncoder 784-256-128" in text and "RMSprop lr 0.01" in text and "mnist" in text


def test_the_logged_config_carries_no_credentials(tiny_cfg):
    tiny_cfg.mlflow.tracking_uri = "https://user:secret@mlflow.example.org"
    text = lineage.logged_config(tiny_cfg)
    assert "secret" not in text and "***@mlflow.example.org" in text


def test_a_metric_the_seeds_do_not_move_passes_only_within_rounding():
    from aeflow.tracking.reproduce import with_spread

    seeds = [{"pca/ssim": 0.8373687814}, {"pca/ssim": 0.8373687814}]
    rounded = with_spread([Row("pca/ssim", 0.8373687807, 0.8373687814)], seeds)
    assert rounded[0].within_spread  # another kernel family's rounding, 1e-9 relative
    changed = with_spread([Row("pca/ssim", 0.8364, 0.8373687814)], seeds)
    assert not changed[0].within_spread  # a real change, 1e-3 relative
