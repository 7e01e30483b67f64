"""Encoder and decoder networks: plain nn.Modules, built from config by Hydra."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "sigmoid": nn.Sigmoid,
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "identity": nn.Identity,
}


def activation(name: str) -> nn.Module:
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; allowed: {sorted(ACTIVATIONS)}") from None


def mlp(dims: Sequence[int], hidden_activation: str, last_activation: str) -> nn.Sequential:
    """Linear layers through `dims`, `hidden_activation` between them, `last_activation` at the end."""
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(d_in, d_out))
        last = i == len(dims) - 2
        layers.append(activation(last_activation if last else hidden_activation))
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    """(B, C, H, W) images -> (B, latent_dim) codes through dense layers."""

    def __init__(
        self,
        in_features: int = 784,
        hidden: Sequence[int] = (256,),
        latent_dim: int = 128,
        activation: str = "sigmoid",
        code_activation: str = "sigmoid",
    ) -> None:
        super().__init__()
        self.net = mlp([in_features, *hidden, latent_dim], activation, code_activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))  # (B, in_features) -> (B, latent_dim)


class MLPDecoder(nn.Module):
    """(B, latent_dim) codes -> (B, 1, H, W) logits; the caller applies the output sigmoid."""

    def __init__(
        self,
        latent_dim: int = 128,
        hidden: Sequence[int] = (256,),
        out_features: int = 784,
        activation: str = "sigmoid",
    ) -> None:
        super().__init__()
        self.net = mlp([latent_dim, *hidden, out_features], activation, "identity")
        side = int(round(out_features**0.5))
        self.out_shape = (1, side, side) if side * side == out_features else (out_features,)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(-1, *self.out_shape)  # (B, 1, H, W) logits
