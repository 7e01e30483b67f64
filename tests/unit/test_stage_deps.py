"""Each stage's code deps in dvc.yaml are exactly the files of its import closure: a change to any
module the stage runs reruns it, and a change to any other module does not."""

from __future__ import annotations

import pytest
import yaml

from aeflow.stages.deps import closures, rewrite
from aeflow.stages.imports import STAGES, import_closure, stage_files, stage_module
from tests.conftest import REPO


def code_deps(stage: str) -> list[str]:
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]
    return [d for d in spec["deps"] if isinstance(d, str) and d.startswith("src/")]


def test_every_stage_of_the_pipeline_is_a_stage_here():
    assert list(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]) == list(STAGES)


@pytest.mark.parametrize("stage", STAGES)
def test_stage_code_deps_are_exactly_its_import_closure(stage):
    deps, closure = code_deps(stage), stage_files(stage)
    missing = sorted(set(closure) - set(deps))
    extra = sorted(set(deps) - set(closure))
    assert not missing, f"dvc.yaml stage {stage!r} runs {missing} but does not list them; run `make deps`"
    assert not extra, f"dvc.yaml stage {stage!r} lists {extra}, which it never runs; run `make deps`"
    assert len(deps) == len(closure), f"dvc.yaml stage {stage!r} lists a file twice"


def test_dvc_yaml_is_what_make_deps_writes():
    text = (REPO / "dvc.yaml").read_text()
    assert rewrite(text, closures(REPO)) == text, "run `make deps`"


DVC_YAML = """\
stages:
  a:
    cmd: python -m a
    deps:
      # code
      - src/aeflow/old.py
      - src/aeflow/gone.py
      # the data
      - ${paths.data}
    params:
      - seed
  b:
    cmd: python -m b
    deps:
      - ${paths.data}
    outs:
      - out
"""


def test_rewrite_replaces_only_the_code_deps_and_keeps_comments():
    new = rewrite(DVC_YAML, {"a": ["src/aeflow/x.py", "src/aeflow/y.py"], "b": ["src/aeflow/z.py"]})
    assert new == DVC_YAML.replace(
        "      - src/aeflow/old.py\n      - src/aeflow/gone.py\n",
        "      - src/aeflow/x.py\n      - src/aeflow/y.py\n",
    ).replace(
        "    deps:\n      - ${paths.data}\n    outs:",
        "    deps:\n      - src/aeflow/z.py\n      - ${paths.data}\n    outs:",
    )
    assert rewrite(new, {"a": ["src/aeflow/x.py", "src/aeflow/y.py"], "b": ["src/aeflow/z.py"]}) == new


def test_rewrite_names_a_stage_it_cannot_find():
    with pytest.raises(ValueError, match=r"\['c'\]"):
        rewrite(DVC_YAML, {"c": ["src/aeflow/x.py"]})


def test_closure_follows_imports_inside_functions_config_targets_and_code_run_by_path():
    closure = import_closure(stage_module("evaluate"))
    # imported inside main()
    assert "aeflow.evaluation.evaluate" in closure
    # built by Hydra from a `_target_`, named by no import statement
    trained = import_closure(stage_module("train"))
    assert "aeflow.models.autoencoder" in trained and "aeflow.data.datamodule" in trained
    # importing a submodule runs its package's __init__
    assert "aeflow.evaluation" in closure
    # MLflow runs the served model's code file by its path
    assert "aeflow.serving.model_code" in import_closure(stage_module("package"))


def test_each_stage_runs_only_its_own_job():
    """Serving code reruns only the package stage; the model-independent baselines never load a
    model; code outside every pipeline (the `aeflow reproduce` command) reruns nothing."""
    runs = {stage: set(stage_files(stage)) for stage in STAGES}
    assert [s for s in STAGES if "src/aeflow/serving/onnx_export.py" in runs[s]] == ["package"]
    assert [s for s in STAGES if "src/aeflow/tracking/registry.py" in runs[s]] == ["package"]
    assert not any("src/aeflow/tracking/reproduce.py" in files for files in runs.values())
    assert not any(
        f.startswith(("src/aeflow/models/", "src/aeflow/training/"))
        for f in runs["baselines"] - runs["download"]
    )
    assert not any(f.startswith(("src/aeflow/serving/", "src/aeflow/evaluation/")) for f in runs["train"])


def test_the_module_that_writes_outputs_is_a_dep_of_every_stage():
    for stage in STAGES:
        assert "src/aeflow/io.py" in stage_files(stage)
        assert "src/aeflow/io.py" in code_deps(stage)
