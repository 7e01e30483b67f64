"""Encoder and decoder networks: plain nn.Modules, built from config by Hydra.

Every encoder maps (B, C, H, W) images to (B, latent_dim) codes and every
decoder maps codes back to (B, C, H, W) *logits*; `AutoencoderNet` joins a pair
and applies the output sigmoid. `latent_dim` is the one code-size parameter of
every pair. Nothing here needs Lightning: evaluation and serving load weights
into `AutoencoderNet`; training wraps it in `aeflow.models.autoencoder.Autoencoder`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from aeflow.models.choices import ACTIVATIONS, NORMS
from aeflow.models.shapes import check_conv_size, conv_side, height_width, square_side

_ACTIVATION_CLASSES: dict[str, type[nn.Module]] = {
    "sigmoid": nn.Sigmoid,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "identity": nn.Identity,
}
assert tuple(_ACTIVATION_CLASSES) == ACTIVATIONS  # noqa: S101 (one list of names, checked at import)


def activation(name: str) -> nn.Module:
    try:
        return _ACTIVATION_CLASSES[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; allowed: {sorted(_ACTIVATION_CLASSES)}") from None


_act = activation  # for classes whose `activation` argument shadows the function


def _norm(name: str, features: int, conv: bool = False) -> list[nn.Module]:
    if name == "none":
        return []
    if name == "batch":
        return [nn.BatchNorm2d(features) if conv else nn.BatchNorm1d(features)]
    if name == "layer":
        return [nn.GroupNorm(1, features) if conv else nn.LayerNorm(features)]
    raise ValueError(f"unknown norm {name!r}; allowed: {list(NORMS)}")


def mlp(
    dims: Sequence[int], hidden_activation: str, last_activation: str, norm: str = "none"
) -> nn.Sequential:
    """Linear layers through `dims`, `hidden_activation` between them, `last_activation` at the end.

    `norm` (batch | layer) goes after every hidden linear layer, never after the last one.
    """
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(d_in, d_out))
        last = i == len(dims) - 2
        if not last:
            layers.extend(_norm(norm, d_out))
        layers.append(activation(last_activation if last else hidden_activation))
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    """(B, C, H, W) images -> (B, latent_dim) codes through dense layers.

    Args:
        in_features: Inputs per image, C * H * W of the data (each image is flattened).
        hidden: Widths of the hidden layers from the input towards the code, e.g. [1000, 500, 250].
        latent_dim: Units of the code, the width of the last layer.
        activation: The activation after every hidden layer.
        code_activation: The activation of the code, after the last layer (`identity`: a linear code).
        norm: Normalisation after every hidden layer, before its activation: `none`, `batch`
            (BatchNorm1d) or `layer` (LayerNorm); never after the code.
    """

    def __init__(
        self,
        in_features: int = 784,
        hidden: Sequence[int] = (256,),
        latent_dim: int = 128,
        activation: str = "sigmoid",
        code_activation: str = "sigmoid",
        norm: str = "none",
    ) -> None:
        super().__init__()
        self.net = mlp([in_features, *hidden, latent_dim], activation, code_activation, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))  # (B, in_features) -> (B, latent_dim)


class MLPDecoder(nn.Module):
    """(B, latent_dim) codes -> (B, C, H, W) logits; the caller applies the output sigmoid.

    `out_channels` and `image_size` (a side or [H, W]) give the image shape, C * H * W =
    `out_features`. Without `image_size` (configs that predate it) the shape is inferred:
    a square grey image when `out_features` is a square number, else plain (B, out_features) vectors.

    Args:
        latent_dim: Units of the code it decodes.
        hidden: Widths of the hidden layers from the code towards the output, e.g. [250, 500, 1000]
            (the encoder's, reversed).
        out_features: Outputs per image, C * H * W: the encoder's in_features.
        activation: The activation after every hidden layer; the output layer has none (logits).
        norm: Normalisation after every hidden layer, before its activation: `none`, `batch`
            (BatchNorm1d) or `layer` (LayerNorm); never after the output layer.
        out_channels: Channels C of the image the outputs form.
        image_size: Side S (S x S) or [H, W] of the image the outputs form, with out_channels *
            H * W = out_features (null: inferred from out_features).
    """

    def __init__(
        self,
        latent_dim: int = 128,
        hidden: Sequence[int] = (256,),
        out_features: int = 784,
        activation: str = "sigmoid",
        norm: str = "none",
        out_channels: int = 1,
        image_size: int | Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.net = mlp([latent_dim, *hidden, out_features], activation, "identity", norm)
        self.out_shape: tuple[int, ...]
        if image_size is not None:
            self.out_shape = (out_channels, *height_width(image_size))
            if math.prod(self.out_shape) != out_features:
                raise ValueError(
                    f"out_features={out_features}: {out_channels} channel(s) of "
                    f"{self.out_shape[1]}x{self.out_shape[2]} are {math.prod(self.out_shape)} values"
                )
            return
        try:
            side = square_side(out_features)
            self.out_shape = (1, side, side)
        except ValueError:  # not an image: plain vectors
            self.out_shape = (out_features,)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(-1, *self.out_shape)  # (B, C, H, W) logits


class ConvEncoder(nn.Module):
    """(B, C, H, W) images -> (B, latent_dim) codes: stride-2 3x3 convolutions, then a linear layer.

    Each conv halves both sides, rounding up (28 -> 14 -> 7 with two layers); `channels`
    lists the output channels of each. `image_size` is a side S (S x S) or [H, W].

    Args:
        in_channels: Channels C of the input images (1: grey, 3: RGB).
        image_size: Side S (S x S) or [H, W] of the input images; each side must leave every
            convolution at least 2 pixels to halve.
        channels: Output channels of each stride-2 3x3 convolution in order, e.g. [32, 64]; each
            convolution halves both sides, rounding up.
        latent_dim: Units of the code, the output of the linear layer after the convolutions.
        activation: The activation after every convolution.
        code_activation: The activation of the code, after the linear layer (`identity`: a linear code).
        norm: Normalisation after every convolution, before its activation: `none`, `batch`
            (BatchNorm2d) or `layer` (GroupNorm with one group); never after the code.
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int | Sequence[int] = 28,
        channels: Sequence[int] = (32, 64),
        latent_dim: int = 32,
        activation: str = "relu",
        code_activation: str = "identity",
        norm: str = "none",
    ) -> None:
        super().__init__()
        if not channels:
            raise ValueError("channels: need at least one convolution")
        check_conv_size(image_size, len(channels))
        layers: list[nn.Module] = []
        c_in = in_channels
        for c_out in channels:
            layers += [
                nn.Conv2d(c_in, c_out, kernel_size=3, stride=2, padding=1),
                *_norm(norm, c_out, conv=True),
                _act(activation),
            ]
            c_in = c_out
        height, width = (conv_side(s, len(channels)) for s in height_width(image_size))
        layers += [nn.Flatten(), nn.Linear(c_in * height * width, latent_dim), _act(code_activation)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, C, H, W) -> (B, latent_dim)


class ConvDecoder(nn.Module):
    """(B, latent_dim) codes -> (B, C, H, W) logits: a linear layer, then stride-2 transposed convs.

    Mirrors ConvEncoder: `channels` is given in the encoder's order (e.g. [32, 64])
    and walked backwards, each transposed convolution doubling both sides; the
    output is cropped to `image_size` (S or [H, W]) where the encoder rounded odd sides up.

    Args:
        latent_dim: Units of the code it decodes.
        channels: The encoder's channels in the encoder's order, walked backwards: one stride-2
            transposed convolution per entry, each doubling both sides.
        out_channels: Channels C of the output image: the encoder's in_channels.
        image_size: Side S (S x S) or [H, W] of the output image: the encoder's image_size.
        activation: The activation after the linear layer and after every transposed convolution
            but the last, which returns logits.
        norm: Normalisation after every transposed convolution but the last, before its
            activation: `none`, `batch` (BatchNorm2d) or `layer` (GroupNorm with one group).
    """

    def __init__(
        self,
        latent_dim: int = 32,
        channels: Sequence[int] = (32, 64),
        out_channels: int = 1,
        image_size: int | Sequence[int] = 28,
        activation: str = "relu",
        norm: str = "none",
    ) -> None:
        super().__init__()
        if not channels:
            raise ValueError("channels: need at least one convolution")
        check_conv_size(image_size, len(channels))
        rev = list(channels)[::-1]
        height, width = height_width(image_size)
        self.out_shape = (out_channels, height, width)
        # (channels, H, W) of the smallest feature map, where the transposed convolutions start
        self.start = (rev[0], conv_side(height, len(channels)), conv_side(width, len(channels)))
        self.fc = nn.Sequential(nn.Linear(latent_dim, math.prod(self.start)), _act(activation))
        layers: list[nn.Module] = []
        for c_in, c_out in zip(rev, rev[1:]):
            layers += [
                nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=1),
                *_norm(norm, c_out, conv=True),
                _act(activation),
            ]
        layers.append(nn.ConvTranspose2d(rev[-1], out_channels, 3, stride=2, padding=1, output_padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        _, height, width = self.out_shape
        out = self.net(self.fc(z).view(-1, *self.start))
        return out[..., :height, :width]  # (B, C, H, W) logits


class AutoencoderNet(nn.Module):
    """`decoder(encoder(x))`: `forward` returns reconstructions in [0, 1], `encode` codes.

    The decoder returns logits; the sigmoid is applied here (and, in training,
    inside the loss for BCE), never twice.
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module) -> None:
        super().__init__()
        self.encoder, self.decoder = encoder, decoder

    @property
    def image_shape(self) -> tuple[int, ...]:
        """(C, H, W) of the images the network takes and returns (the decoder's output shape)."""
        return tuple(self.decoder.out_shape)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)  # (B, latent_dim)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decoder(z))  # (B, C, H, W) in [0, 1]

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))  # (B, C, H, W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))
