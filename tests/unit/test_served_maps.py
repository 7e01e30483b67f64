"""The served model's output=anomaly_map: the evaluate stage's map, with the run's settings, in the
image's shape."""

from __future__ import annotations

import functools
from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np
import pytest
import torch
from mlflow.models import infer_signature
from omegaconf import OmegaConf

from aeflow.config.instantiate import instantiate_network
from aeflow.config.params import compose
from aeflow.evaluation.anomaly_maps import MapSettings, anomaly_map
from aeflow.serving.pyfunc import MODEL_CODE, AutoencoderPyfunc, pinned_requirements, predict

SIDE = 16
NET = [
    "experiment=inspection",
    f"data.image_size=[{SIDE},{SIDE}]",
    f"data.input_features={SIDE * SIDE}",
    "model.latent_dim=8",
    "model.encoder.channels=[4,8]",
]


def _normal_images(n: int, seed: int = 0) -> torch.Tensor:
    """(n, 1, SIDE, SIDE) in [0, 1]: flat grey with a little noise, the 'good' images."""
    generator = torch.Generator().manual_seed(seed)
    return (0.3 + 0.02 * torch.randn(n, 1, SIDE, SIDE, generator=generator)).clamp(0, 1)


@functools.cache
def _fitted_weights() -> dict[str, torch.Tensor]:
    """The tiny conv network of NET, fitted for 150 steps to reconstruct flat grey (once: the map
    settings the tests vary do not change the network)."""
    torch.manual_seed(0)
    net = instantiate_network(compose(NET))
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    images = _normal_images(32)
    for _ in range(150):
        optimizer.zero_grad()
        (net(images) - images).pow(2).mean().backward()
        optimizer.step()
    return net.state_dict()


def _trained(cfg) -> torch.nn.Module:
    """The network of `cfg` with the fitted weights."""
    net = instantiate_network(cfg)
    net.load_state_dict(_fitted_weights())
    return net.eval()


def _served(tmp_path: Path, overrides: list[str]) -> tuple[AutoencoderPyfunc, torch.nn.Module]:
    """The pyfunc loaded as MLflow loads it: from the packaged weights and resolved config."""
    cfg = compose([*NET, *overrides])
    net = _trained(cfg)
    torch.save(net.state_dict(), tmp_path / "weights.pt")
    OmegaConf.save(cfg, tmp_path / "config.yaml")
    served = AutoencoderPyfunc()
    artifacts = {"weights": str(tmp_path / "weights.pt"), "config": str(tmp_path / "config.yaml")}
    served.load_context(SimpleNamespace(artifacts=artifacts))
    return served, net


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ([], MapSettings("l2", 11, 0.0)),  # conf/config.yaml's evaluate.inspection: maps [l2, ssim]
        (
            ["evaluate.inspection.maps=[ssim,l2]", "evaluate.inspection.smoothing_sigma=1.5"],
            MapSettings("ssim", 11, 1.5),
        ),
        (
            ["evaluate.inspection.maps=[ssim]", "evaluate.inspection.ssim_window=5"],
            MapSettings("ssim", 5, 0.0),
        ),
    ],
)
def test_served_maps_are_the_evaluate_stages_maps_with_the_runs_settings(tmp_path, overrides, expected):
    served, net = _served(tmp_path, overrides)
    got = served.map_settings
    assert (got.kind, got.window, got.sigma) == (expected.kind, expected.window, expected.sigma)
    images = torch.rand(5, 1, SIDE, SIDE, generator=torch.Generator().manual_seed(1))
    maps = served.predict(None, images.reshape(5, -1).numpy(), params={"output": "anomaly_map"})
    assert maps.shape == (5, SIDE, SIDE) and maps.dtype == np.float32
    with torch.no_grad():
        ours = anomaly_map(images, net(images), served.map_settings).numpy()
    np.testing.assert_array_equal(maps, ours)


def test_the_served_map_is_highest_inside_a_drawn_bright_square(tmp_path):
    # The L2 map, unsmoothed: its peak is the pixel the reconstruction misses most. (SSIM's peak
    # may lie anywhere a window overlaps the square's edge.)
    served, _ = _served(tmp_path, ["evaluate.inspection.maps=[l2]", "evaluate.inspection.smoothing_sigma=0"])
    images = _normal_images(3, seed=2)
    rows, cols = slice(9, 13), slice(3, 7)
    images[1, :, rows, cols] = 1.0
    maps = served.predict(None, images.numpy(), params={"output": "anomaly_map"})  # (N, C, H, W) accepted
    row, col = np.unravel_index(maps[1].argmax(), maps[1].shape)
    assert rows.start <= row < rows.stop and cols.start <= col < cols.stop
    assert maps[1].max() > 3 * max(maps[0].max(), maps[2].max())


def test_an_unknown_output_and_a_config_without_map_settings_are_refused(tmp_path):
    served, net = _served(tmp_path, [])
    images = _normal_images(2).reshape(2, -1).numpy()
    with pytest.raises(ValueError, match="params.output='map': allowed: .*is_anomaly, anomaly_map"):
        served.predict(None, images, params={"output": "map"})
    with pytest.raises(ValueError, match="has no evaluate.inspection"):
        predict(net, images, "anomaly_map", map_settings=None)


def test_the_mlflow_model_answers_output_anomaly_map(tmp_path):
    """Saved and loaded by MLflow itself (from code, with a params signature, as log_model does)."""
    import aeflow

    served, net = _served(tmp_path, ["evaluate.inspection.maps=[l2]"])
    example = _normal_images(2).reshape(2, -1).numpy()
    mlflow.pyfunc.save_model(
        str(tmp_path / "model"),
        python_model=str(MODEL_CODE),
        artifacts={"weights": str(tmp_path / "weights.pt"), "config": str(tmp_path / "config.yaml")},
        code_paths=[str(Path(aeflow.__file__).parent)],
        signature=infer_signature(example, predict(net, example), params={"output": "reconstruction"}),
        pip_requirements=pinned_requirements(),
        input_example=example,
    )
    maps = mlflow.pyfunc.load_model(str(tmp_path / "model")).predict(
        example, params={"output": "anomaly_map"}
    )
    np.testing.assert_array_equal(maps, served.predict(None, example, params={"output": "anomaly_map"}))
