"""The team workflow's building blocks: where the store lives, DDP ranks, registry tags, encode inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aeflow.serving import pyfunc as serving
from aeflow.serving.encode import InputError, read_images
from aeflow.tracking import registry
from aeflow.tracking import runs as tracking
from aeflow.training.distributed import is_rank_zero


def test_project_root_is_dvc_root_or_the_main_repository(tmp_path, monkeypatch):
    main = tmp_path / "repo"
    workspace = main / ".dvc" / "tmp" / "exps" / "tmpabc123"
    workspace.mkdir(parents=True)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(workspace)
    assert tracking.project_root() == main.resolve()  # a queued experiment's throwaway copy
    assert tracking.tracking_uri() == f"sqlite:///{main.resolve() / 'mlflow.db'}"
    monkeypatch.chdir(main)
    assert tracking.project_root() == main.resolve()
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))  # what DVC sets for every stage command
    monkeypatch.chdir(workspace)
    assert tracking.project_root() == tmp_path.resolve()


def test_metric_tags_are_every_numeric_leaf():
    tags = registry.metric_tags({"test": {"mse": 0.5, "by_digit": {"3": 2}, "name": "x", "ok": True}})
    assert tags == {"test.mse": "0.5", "test.by_digit.3": "2.0"}
    assert "test.sq_err_per_image = 3" in registry.describe({"test.sq_err_per_image": "3.0"}, "r1")


@pytest.mark.parametrize(
    ("env", "zero"),
    [
        ({}, True),
        ({"LOCAL_RANK": "0"}, True),
        ({"LOCAL_RANK": "1"}, False),  # a child of Lightning's DDP launcher
        ({"LOCAL_RANK": "0", "NODE_RANK": "1"}, False),  # first process of the second node
        ({"RANK": "0", "LOCAL_RANK": "0"}, True),  # torchrun
        ({"RANK": "3", "LOCAL_RANK": "1"}, False),
        ({"SLURM_PROCID": "2"}, False),
        ({"SLURM_PROCID": "0"}, True),
    ],
)
def test_rank_zero_from_launcher_environment(env, zero):
    assert is_rank_zero(env) is zero


def test_read_images_rejects_what_it_cannot_encode(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no .png"):
        read_images(tmp_path / "empty")
    np.save(tmp_path / "bad.npy", np.zeros((2, 5, 5, 5)))
    with pytest.raises(InputError, match="shape"):
        read_images(tmp_path / "bad.npy")
    np.save(tmp_path / "range.npy", np.full((2, 4, 4), 3.0))
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        read_images(tmp_path / "range.npy")
    np.save(tmp_path / "ok.npy", np.full((2, 16), 255, dtype=np.uint8))
    images, names = read_images(tmp_path / "ok.npy")
    assert images.shape == (2, 4, 4) and images.max() == 1.0 and names == ["00000", "00001"]


def test_serving_takes_flat_or_square_images_and_refuses_others():
    class Probe(torch.nn.Module):
        image_shape = (1, 28, 28)  # (C, H, W), as AutoencoderNet tells the server

        def encode(self, x):
            assert x.shape[1:] == (1, 28, 28)  # the layout the model was trained on
            return x.flatten(1)[:, :3]

        def forward(self, x):
            return self.encode(x)

    for shape in ((2, 784), (2, 28, 28), (2, 1, 28, 28)):
        assert serving.predict(Probe(), np.zeros(shape, np.float32), "code").shape == (2, 3)
    with pytest.raises(ValueError, match=r"trained shape C=1, H=28, W=28: \(N, 784\)"):
        serving.predict(Probe(), np.zeros((2, 780), np.float32), "code")
    with pytest.raises(ValueError, match="allowed"):
        serving.predict(Probe(), np.zeros((2, 784), np.float32), "logits")
