"""Each stage's `deps:` in dvc.yaml cover every module the stage runs, so a code change reruns it."""

from __future__ import annotations

import pytest
import yaml

from aeflow.stages.imports import STAGES, import_closure, stage_files, stage_module
from tests.conftest import REPO


def code_deps(stage: str) -> list[str]:
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]
    return [d for d in spec["deps"] if isinstance(d, str) and d.startswith("src/")]


def covered(path: str, deps: list[str]) -> bool:
    return any(path == dep or path.startswith(dep.rstrip("/") + "/") for dep in deps)


@pytest.mark.parametrize("stage", STAGES)
def test_stage_deps_cover_its_import_closure(stage):
    deps = code_deps(stage)
    missing = [path for path in stage_files(stage) if not covered(path, deps)]
    assert not missing, f"dvc.yaml stage {stage!r} runs {missing} but does not list them in deps"


@pytest.mark.parametrize("stage", STAGES)
def test_stage_deps_name_only_existing_paths(stage):
    assert all((REPO / dep).exists() for dep in code_deps(stage)), code_deps(stage)


def test_closure_follows_imports_inside_functions_and_config_targets():
    closure = import_closure(stage_module("evaluate"))
    # imported inside main()
    assert "aeflow.evaluation.evaluate" in closure
    # built by Hydra from a `_target_`, named by no import statement
    assert "aeflow.models.autoencoder" in closure and "aeflow.data.datamodule" in closure
    # importing a submodule runs its package's __init__
    assert "aeflow.evaluation" in closure


def test_the_module_that_writes_outputs_is_a_dep_of_every_stage():
    for stage in STAGES:
        assert "src/aeflow/io.py" in stage_files(stage)
        assert covered("src/aeflow/io.py", code_deps(stage))
