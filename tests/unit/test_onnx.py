"""The ONNX export: ONNX Runtime gives PyTorch's codes, reconstructions and anomaly scores within 1e-5,
and its anomaly maps within rtol 1e-5, atol 1e-6."""

from pathlib import Path

import pytest
import torch

from aeflow.evaluation.anomaly import MODEL_SCORES, as_float, fit_detector
from aeflow.evaluation.anomaly_maps import MapSettings, model_map
from aeflow.serving.onnx_export import OnnxAutoencoder, export
from tests.conftest import make_synthetic_idx
from tests.helpers import require_module

require_module("onnxruntime")

# The networks are trained briefly first: an untrained network maps every image to nearly the
# same code (the tutorial's sigmoid codes all within ~0.004 of 0.5), and a distance between codes
# that close is resolved by float32 to only ~1e-5 of itself whatever the covariance.
TRAIN = ["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "data.val_size=100"]


def _trained(model: str, data: Path, files: dict, steps: int, overrides: tuple[str, ...] = ()):
    """The plain network of `experiment=model` after `steps` batches of the real Trainer on `data`."""
    import pytorch_lightning as pl

    from aeflow.config.instantiate import instantiate_datamodule, instantiate_model
    from aeflow.config.params import compose

    cfg = compose([f"experiment={model}", *TRAIN, *overrides])
    cfg.data.files, cfg.paths.data = files, str(data)
    torch.manual_seed(0)
    module, datamodule = instantiate_model(cfg), instantiate_datamodule(cfg)
    pl.Trainer(
        max_steps=steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    ).fit(module, datamodule)
    datamodule.setup()
    return module.net.eval(), {k: as_float(x) for k, (x, _) in datamodule.splits.items()}


def _assert_onnx_matches(net, splits: dict, folder: Path) -> None:
    export(net, folder)
    assert sorted(p.name for p in folder.iterdir()) == ["decoder.onnx", "encoder.onnx"]
    ort = OnnxAutoencoder(folder, threads=1)
    test = splits["test"]
    with torch.no_grad():
        codes, recon = net.encode(test), net.decode(net.encode(test))
    # Any batch size (the batch dimension is dynamic), the same numbers.
    for batch in (1, 7, len(test)):
        torch.testing.assert_close(ort.encode(test[:batch]), codes[:batch], rtol=0, atol=1e-5)
        torch.testing.assert_close(ort.decode(codes[:batch]), recon[:batch], rtol=0, atol=1e-5)
    detector = fit_detector(net.encode, net.decode, splits["train"], splits["val"], quantile=0.9)
    for score in MODEL_SCORES:
        ours = detector.scores(net.encode, net.decode, test, score)
        theirs = detector.scores(ort.encode, ort.decode, test, score)
        torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=0, msg=score)


@pytest.mark.parametrize("model", ["tutorial", "conv"])
def test_onnx_runtime_matches_pytorch_within_1e_5(tmp_path, model):
    files = make_synthetic_idx(tmp_path / "data", n_train=400, n_test=300)
    net, splits = _trained(model, tmp_path / "data", files, steps=30, overrides=["data.batch_size=32"])
    _assert_onnx_matches(net, splits, tmp_path / "onnx")


def test_onnx_runtime_matches_pytorch_within_1e_5_on_the_mnist_test_set(tmp_path, mnist_mirror):
    """The whole MNIST test set, on the tutorial network after 200 batches: its sigmoids saturate,
    where the BCE of a float32 reconstruction is most sensitive to rounding."""
    from aeflow.config.params import compose
    from aeflow.data.download import download_dataset

    files = compose([]).data.files
    download_dataset(tmp_path / "mnist", files, [mnist_mirror.as_uri() + "/"])
    net, splits = _trained("tutorial", tmp_path / "mnist", files, steps=200)
    splits["train"] = splits["train"][:10000]  # the code Gaussian: enough codes for 128 units
    _assert_onnx_matches(net, splits, tmp_path / "onnx")


@pytest.mark.parametrize(
    "settings",
    [
        MapSettings("l2", 11, 0.0),
        MapSettings("l2", 11, 1.5),
        MapSettings("ssim", 11, 0.0),
        MapSettings("ssim", 7, 2.0),
    ],
    ids=["l2", "l2_smoothed", "ssim", "ssim_7_smoothed"],
)
def test_the_exported_anomaly_map_matches_pytorch(tmp_path, settings):
    """images -> map in one graph (network, map, smoothing): PyTorch's maps within rtol 1e-5, atol 1e-6
    (measured: at most ~1.1e-6 absolute for SSIM maps near 0.5, ~1.2e-7 for L2), at any batch size."""
    from aeflow.config.instantiate import instantiate_network
    from aeflow.config.params import compose

    cfg = compose(["experiment=inspection", "data.image_size=[32,32]", "data.input_features=1024"])
    cfg.model.encoder.channels, cfg.model.latent_dim = [4, 8], 8
    torch.manual_seed(0)
    net = instantiate_network(cfg).eval()
    export(net, tmp_path, net.image_shape, settings)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["anomaly_map.onnx", "decoder.onnx", "encoder.onnx"]
    ort = OnnxAutoencoder(tmp_path, threads=1)
    images = torch.rand(20, *net.image_shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model_map(net, images, settings)
    for batch in (1, 7, len(images)):
        torch.testing.assert_close(ort.anomaly_map(images[:batch]), ours[:batch], rtol=1e-5, atol=1e-6)


def test_a_runner_without_an_exported_map_says_how_to_get_one(tmp_path):
    from aeflow.config.instantiate import instantiate_network
    from aeflow.config.params import compose

    net = instantiate_network(compose(["experiment=tutorial"])).eval()
    export(net, tmp_path)
    with pytest.raises(FileNotFoundError, match="no anomaly map was exported; export with map settings"):
        OnnxAutoencoder(tmp_path).anomaly_map(torch.rand(1, *net.image_shape))
