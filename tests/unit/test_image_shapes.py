"""The networks take and return the data's real (C, H, W): grey or RGB, square or not, dense or conv."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from aeflow.config.instantiate import instantiate_network
from aeflow.config.params import compose
from aeflow.config.schema import validate
from aeflow.errors import ConfigError
from aeflow.models.components import ConvDecoder, ConvEncoder, MLPDecoder
from aeflow.models.shapes import check_conv_size, max_conv_layers

RGB_24x32 = ["data=folder", "data.path=/images", "data.image_size=[24,32]", "data.channels=3"]


@pytest.mark.parametrize("model", [[], ["experiment=conv"]])
def test_rgb_non_square_folder_config_builds_a_network_of_the_data_shape(model):
    cfg = compose([*RGB_24x32, "data.input_features=2304", *model])
    validate(cfg)
    net = instantiate_network(cfg)
    x = torch.rand(5, 3, 24, 32)  # (B, C, H, W)
    assert net.image_shape == (3, 24, 32)
    assert net(x).shape == x.shape and net.encode(x).shape == (5, cfg.model.latent_dim)


def test_mnist_networks_keep_their_shape_and_parameters():
    for overrides in ([], ["experiment=conv"]):
        net = instantiate_network(compose(overrides))
        assert net.image_shape == (1, 28, 28)
    torch.manual_seed(0)
    from_config = instantiate(compose().model.decoder, _convert_="all")
    torch.manual_seed(0)
    inferred = MLPDecoder(latent_dim=128, hidden=[256], out_features=784)  # shape inferred: square grey
    assert inferred.out_shape == from_config.out_shape == (1, 28, 28)
    for a, b in zip(from_config.state_dict().values(), inferred.state_dict().values(), strict=True):
        assert torch.equal(a, b)  # the explicit shape adds no parameter and draws no random number


def test_dense_decoder_refuses_a_shape_its_outputs_do_not_fill():
    with pytest.raises(ValueError, match="3 channel\\(s\\) of 24x32 are 2304 values"):
        MLPDecoder(out_features=784, out_channels=3, image_size=[24, 32])
    with pytest.raises(ConfigError, match="model.decoder.out_features=784"):
        validate(compose(["model.decoder.out_channels=3"]))


@pytest.mark.parametrize(("size", "layers"), [((7, 9), 2), ((5, 17), 3), ((2, 2), 1), ((28, 28), 5)])
def test_conv_pair_reconstructs_any_size_its_strides_allow(size, layers):
    channels = [4] * layers
    encoder = ConvEncoder(in_channels=3, image_size=list(size), channels=channels, latent_dim=6)
    decoder = ConvDecoder(latent_dim=6, channels=channels, out_channels=3, image_size=list(size))
    x = torch.rand(2, 3, *size)
    assert decoder(encoder(x)).shape == x.shape


def test_conv_sides_too_small_for_the_strides_are_refused_by_name():
    assert max_conv_layers(28) == 5 and max_conv_layers(3) == 2 and max_conv_layers(1) == 0
    with pytest.raises(ValueError, match="image H=28 is too small for 6 stride-2 convolutions"):
        check_conv_size(28, 6)
    with pytest.raises(ValueError, match="image W=4 is too small for 3 stride-2"):
        ConvEncoder(image_size=[24, 4], channels=[8, 8, 8])
    cfg = compose(
        [*RGB_24x32, "data.input_features=2304", "experiment=conv", "model.encoder.channels=[8,8,8,8,8,8]"]
    )
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert "model.encoder.channels=[8, 8, 8, 8, 8, 8]" in str(err.value)
    assert "image H=24 is too small for 6 stride-2 convolutions" in str(err.value)
    assert "at most 5 convolution(s)" in str(err.value)


def test_served_model_takes_rows_of_the_trained_rgb_shape_and_refuses_others(tmp_path):
    from aeflow.serving.pyfunc import predict

    net = instantiate_network(compose([*RGB_24x32, "data.input_features=2304"])).eval()
    rows = np.random.default_rng(0).random((3, 2304), dtype=np.float32)  # (N, C*H*W), channels first
    assert predict(net, rows).shape == (3, 2304)
    assert predict(net, rows.reshape(3, 3, 24, 32), "code").shape == (3, 128)
    with pytest.raises(
        ValueError, match=r"trained shape C=3, H=24, W=32: \(N, 2304\), \(N, 3, 24, 32\); got"
    ):
        predict(net, rows[:, :784])


def test_encode_reads_a_colour_folder_and_writes_colour_reconstructions(tmp_path):
    from PIL import Image

    from aeflow.serving.encode import encode, read_images
    from aeflow.serving.pyfunc import predict
    from tests.image_folders import write_images

    write_images(tmp_path / "in", 3, mode="RGB", size=(24, 32))
    images, names = read_images(tmp_path / "in")
    assert images.shape == (3, 3, 24, 32) and names == ["img_00000", "img_00001", "img_00002"]
    net = instantiate_network(compose([*RGB_24x32, "data.input_features=2304"])).eval()
    written = encode(images, names, lambda x, output: predict(net, x, output), tmp_path / "out")
    assert np.load(written["reconstructions"]).shape == (3, 3, 24, 32)
    with Image.open(tmp_path / "out" / "reconstructions" / "img_00000.png") as png:
        assert png.mode == "RGB" and png.size == (32, 24)
