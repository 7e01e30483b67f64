"""The stages that do not train (baselines, evaluate, package, visualize) load the plain network
and import neither Lightning nor the packages it pulls in (torchmetrics, torchvision): their
start-up stays short."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from aeflow.stages.imports import import_statements
from tests.conftest import REPO

TRAINING_ONLY = ("pytorch_lightning", "lightning", "lightning_fabric", "torchmetrics", "torchvision")

# In a fresh interpreter: every import statement of the stage, then what its main() runs before
# its own work (the config validated for its sections, the network built from it, SSIM), then
# which training-only packages got loaded.
PROBE = """
import json, sys
{imports}
import importlib
stage = importlib.import_module("aeflow.stages.{stage}")
from aeflow.config.instantiate import instantiate_network
from aeflow.config.params import load_params
from aeflow.evaluation.metrics import ssim_per_image
import torch
cfg = load_params(sections=stage.SECTIONS)
net = instantiate_network(cfg).eval()
x = torch.rand(2, 1, 28, 28)
ssim_per_image(net(x), x)
print(json.dumps(sorted(m for m in {banned!r} if m in sys.modules)))
"""


def loaded_training_packages(stage: str, extra: str = "") -> list[str]:
    code = PROBE.format(
        imports="\n".join([*import_statements(stage), extra]), stage=stage, banned=TRAINING_ONLY
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("stage", ["baselines", "evaluate", "package", "visualize"])
def test_stage_that_does_not_train_imports_no_lightning(stage):
    assert "from aeflow.config.params import load_params" in import_statements(stage)  # main()'s
    assert loaded_training_packages(stage) == []


def test_the_probe_sees_lightning_when_it_is_imported():
    assert "pytorch_lightning" in loaded_training_packages("evaluate", "import aeflow.models.autoencoder")
