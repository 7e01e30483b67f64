"""Portable numerics pin every CPU kernel choice: two processes whose environments select different
kernel families (ATen's capability, MKL's CNR branch) train the real model to bit-identical weights
in portable mode, and to different weights in native mode. No second machine needed: this CPU runs
the other families on request."""

from __future__ import annotations

import json
import sys

import pytest

from aeflow.numerics.modes import NATIVE, PORTABLE
from tests.conftest import make_synthetic_idx
from tests.helpers import REPO, TINY, run, user_env

# A process as a stage runs: the mode's pins first (as stages/common.py's run_stage), then torch,
# then the real model and Trainer from the composed config, a few batches of tiny data.
CHILD = """
import hashlib, json, sys
from aeflow.numerics.modes import apply
mode, folder, files, *overrides = sys.argv[1:]
apply(mode, None)
import pytorch_lightning as pl, torch
from aeflow.config.instantiate import instantiate_datamodule, instantiate_model
from aeflow.config.params import compose
from aeflow.numerics.fingerprint import fingerprint
from aeflow.training.performance import build_trainer
cfg = compose([*overrides, f"performance.numerics={mode}"])
cfg.paths.data, cfg.data.files = folder, json.loads(files)
pl.seed_everything(cfg.seed, workers=True, verbose=False)
model = instantiate_model(cfg)
trainer = build_trainer(cfg, callbacks=[], logger=False, enable_checkpointing=False)
trainer.fit(model, datamodule=instantiate_datamodule(cfg))
weights = b"".join(p.detach().numpy().tobytes() for p in model.parameters())
print(json.dumps({"weights": hashlib.sha256(weights).hexdigest(), **fingerprint(cfg).as_dict()}))
"""

# Two kernel families this CPU can run: the oldest (ATen without vector extensions, MKL's SSE2
# branch) and the one the libraries pick for it.
OLDEST = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE"}
CHOSEN: dict[str, str] = {}
PINS = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA", "MKL_DYNAMIC", "OMP_DYNAMIC")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("numerics-data")
    return folder, make_synthetic_idx(folder, n_train=200)


def train(data, mode: str, family: dict[str, str], *overrides: str) -> dict:
    folder, files = data
    env = user_env(PYTHONPATH=str(REPO / "src"))
    for var in PINS:
        env.pop(var, None)
    env.update(family)
    cmd = [sys.executable, "-c", CHILD, mode, str(folder), json.dumps(files), *TINY, *overrides]
    proc = run(REPO, *cmd, env=env)  # compose() reads conf/ from the working directory
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("experiment", ["experiment=tutorial", "experiment=hinton2006"])
def test_portable_weights_are_bit_identical_whatever_kernels_the_environment_selects(
    tmp_path, data, experiment
):
    oldest = train(data, PORTABLE, OLDEST, experiment)
    chosen = train(data, PORTABLE, CHOSEN, experiment)
    assert oldest["weights"] == chosen["weights"]
    assert oldest["hash"] == chosen["hash"] and oldest["aten.capability"] == "AVX2"
    assert oldest["mkl.cbwr"] == "COMPATIBLE" and oldest["threads"] == "1"


def test_native_weights_follow_the_kernel_family(data):
    oldest = train(data, NATIVE, OLDEST, "experiment=tutorial")
    chosen = train(data, NATIVE, CHOSEN, "experiment=tutorial")
    if chosen["aten.capability"] == "DEFAULT":
        pytest.skip("this CPU has no AVX2: ATen runs its DEFAULT kernels either way")
    assert oldest["aten.capability"] == "DEFAULT" != chosen["aten.capability"]
    assert oldest["weights"] != chosen["weights"]
    # The fingerprint tells the two apart: a reproduction across them cannot expect bit-identity.
    assert oldest["hash"] != chosen["hash"]
