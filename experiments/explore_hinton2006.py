"""Recipe exploration for the hinton2006 preset, in plain PyTorch (no Lightning, no MLflow).

Trains the 784-1000-500-250-30 autoencoder on MNIST's 55k training split (the
same seeded 5k validation slice as the pipeline) and prints the validation and
test squared error per image. Used on a GPU to choose the preset's activation,
normalisation, learning rate and batch size; the numbers are in
conf/experiment/hinton2006.yaml and the README. Recipes are JSON, one per argument:

    python experiments/explore_hinton2006.py /path/to/mnist-gz \
        '{"act": "elu", "norm": "layer", "lr": 0.003, "epochs": 9, "bs": 128}'

Keys: act (relu|gelu|elu|sigmoid|tanh|silu), norm (batch|layer|none), lr,
epochs, bs, sched (onecycle|cosine|none), loss (bce|mse), clip, code, hidden,
verbose (print every epoch), seed.
"""

from __future__ import annotations

import gzip
import json
import math
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ACT = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "elu": nn.ELU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "silu": nn.SiLU,
}
NORM = {"batch": nn.BatchNorm1d, "layer": nn.LayerNorm}


def load(folder: str, name: str) -> torch.Tensor:
    with gzip.open(f"{folder}/{name}.gz") as f:
        return torch.from_numpy(np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 784).copy())


def data(folder: str, dev: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    train, test = load(folder, "train-images-idx3-ubyte"), load(folder, "t10k-images-idx3-ubyte")
    perm = torch.randperm(60000, generator=torch.Generator().manual_seed(0))  # as IDXDataModule
    return train[perm[5000:]].to(dev), train[perm[:5000]].to(dev), test.to(dev)


def mlp(dims: list[int], act: str, norm: str | None) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            if norm and norm != "none":
                layers.append(NORM[norm](b))
            layers.append(ACT[act]())
    return nn.Sequential(*layers)


@torch.no_grad()
def sq_err(model: nn.Module, images: torch.Tensor) -> float:
    total = 0.0
    for j in range(0, len(images), 2000):
        x = images[j : j + 2000].float() / 255
        total += (torch.sigmoid(model(x)) - x).pow(2).sum().item()
    return total / len(images)


def run(r: dict, train: torch.Tensor, val: torch.Tensor, test: torch.Tensor, dev: str) -> list:
    torch.manual_seed(r.get("seed", 0))
    code, hidden = r.get("code", 30), r.get("hidden", [1000, 500, 250])
    model = nn.Sequential(
        mlp([784, *hidden, code], r["act"], r.get("norm")),
        mlp([code, *hidden[::-1], 784], r["act"], r.get("norm")),
    ).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=r["lr"], weight_decay=r.get("wd", 0.0))
    bs, epochs = r.get("bs", 256), r["epochs"]
    steps = epochs * math.ceil(len(train) / bs)
    sched = {
        "onecycle": lambda: torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=r["lr"], total_steps=steps),
        "cosine": lambda: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps),
        "none": lambda: None,
    }[r.get("sched", "onecycle")]()
    started, history = time.time(), []
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(train), device=dev)
        for i in range(0, len(train), bs):
            x = train[perm[i : i + bs]].float() / 255
            logits = model(x)
            if r.get("loss", "bce") == "bce":
                loss = F.binary_cross_entropy_with_logits(logits, x)
            else:
                loss = F.mse_loss(torch.sigmoid(logits), x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if r.get("clip"):
                nn.utils.clip_grad_norm_(model.parameters(), r["clip"])
            opt.step()
            if sched is not None:
                sched.step()
        if r.get("verbose") or epoch == epochs - 1:
            model.eval()
            history.append(
                (
                    epoch,
                    round(sq_err(model, val), 3),
                    round(sq_err(model, test), 3),
                    round(time.time() - started, 1),
                )
            )
    return history  # [(epoch, val sq err, test sq err, seconds)]


def main() -> None:
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    train, val, test = data(sys.argv[1], dev)
    for spec in sys.argv[2:]:
        recipe = json.loads(spec)
        sys.stdout.write(f"{json.dumps(recipe)} -> {run(recipe, train, val, test, dev)}\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
