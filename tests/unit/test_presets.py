"""Presets and building blocks: each composes, validates, builds and trains.

Training runs a real pl.Trainer for two steps on the tiny synthetic IDX data
of tests/conftest.py, so every combination is exercised end to end on the CPU.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from pytorch_lightning.callbacks import EarlyStopping
from torch import nn

from aeflow.config.instantiate import instantiate_datamodule, instantiate_model
from aeflow.config.params import compose
from aeflow.config.schema import validate
from aeflow.data.download import download_dataset
from aeflow.data.idx import read_idx
from aeflow.errors import ConfigError
from aeflow.models.autoencoder import DenoisingAutoencoder
from aeflow.training.callbacks import configured_callbacks
from tests.helpers import require_system_path

PRESETS = ("tutorial", "hinton2006", "hinton2006_2d", "conv", "denoising")
OPTIMIZERS = {
    "rmsprop": torch.optim.RMSprop,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
}
SCHEDULERS = {
    "none": None,
    "cosine": torch.optim.lr_scheduler.CosineAnnealingLR,
    "onecycle": torch.optim.lr_scheduler.OneCycleLR,
}
FASHION_MIRROR = Path("/usr/share/datasets/fashion-mnist")


def tiny(overrides, base):
    """compose(overrides), pointed at the tiny data and output folders of `base` (tiny_cfg)."""
    cfg = compose(list(overrides))
    for key in ("data", "paths", "mlflow"):
        cfg[key] = base[key]
    cfg.data.batch_size = 16
    return cfg


def fit(cfg, max_epochs: int = 1, train_batches: int = 2) -> tuple[pl.LightningModule, pl.Trainer]:
    """Train `cfg`'s model with its own trainer config, cut to a few batches."""
    validate(cfg)
    pl.seed_everything(0)
    model = instantiate_model(cfg)
    kwargs = {k: v for k, v in OmegaConf.to_container(cfg.trainer).items() if k != "_target_"}
    kwargs.update(
        max_epochs=max_epochs,
        limit_train_batches=train_batches,
        limit_val_batches=2,
        max_time=None,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=configured_callbacks(cfg),
    )
    trainer = pl.Trainer(**kwargs)
    before = [p.detach().clone() for p in model.parameters()]
    trainer.fit(model, datamodule=instantiate_datamodule(cfg))
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters())), "nothing trained"
    assert torch.isfinite(trainer.callback_metrics["val/loss"])
    return model, trainer


@pytest.mark.parametrize("loss", ["mse", "bce"])
@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_trains_with_either_loss(preset, loss, tiny_cfg):
    cfg = tiny([f"experiment={preset}", f"model.loss={loss}"], tiny_cfg)
    model, trainer = fit(cfg)
    assert trainer.global_step == 2 and model.loss_name == loss
    x = torch.rand(3, 1, 28, 28)
    out = model.eval()(x)
    assert out.shape == x.shape and 0 <= out.min() and out.max() <= 1


@pytest.mark.parametrize("scheduler", SCHEDULERS)
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_every_optimizer_with_every_schedule(optimizer, scheduler, tiny_cfg):
    cfg = tiny(
        [
            f"optimizer={optimizer}",
            f"scheduler={scheduler}",
            "optimizer.lr=0.01",
            "optimizer.weight_decay=0.001",
        ],
        tiny_cfg,
    )
    model, trainer = fit(cfg)
    opt = trainer.optimizers[0]
    assert type(opt) is OPTIMIZERS[optimizer] and opt.defaults["weight_decay"] == 0.001
    configs = trainer.lr_scheduler_configs
    if SCHEDULERS[scheduler] is None:
        assert configs == [] and opt.param_groups[0]["lr"] == 0.01
        return
    (config,) = configs
    assert type(config.scheduler) is SCHEDULERS[scheduler] and config.interval == "step"
    # The schedule spans exactly the run's optimizer steps (2), and has moved.
    length = getattr(config.scheduler, "total_steps", None) or config.scheduler.T_max
    assert length == trainer.estimated_stepping_batches == 2
    assert config.scheduler.last_epoch == 2 and opt.param_groups[0]["lr"] != 0.01


def test_epoch_interval_schedule_counts_epochs(tiny_cfg):
    cfg = tiny(["scheduler=cosine", "scheduler.interval=epoch"], tiny_cfg)
    _, trainer = fit(cfg, max_epochs=2)
    (config,) = trainer.lr_scheduler_configs
    assert config.interval == "epoch" and config.scheduler.T_max == 2
    assert config.scheduler.last_epoch == 2


def test_gradient_clipping_is_one_override(tiny_cfg):
    cfg = tiny(["trainer.gradient_clip_val=0.5"], tiny_cfg)
    _, trainer = fit(cfg)
    assert trainer.gradient_clip_val == 0.5


def test_early_stopping_switch(tiny_cfg):
    assert configured_callbacks(compose()) == []  # off by default
    # min_delta larger than any loss: no epoch after the first counts as an improvement.
    cfg = tiny(
        [
            "callbacks.early_stopping.enabled=true",
            "callbacks.early_stopping.patience=1",
            "callbacks.early_stopping.min_delta=1000",
        ],
        tiny_cfg,
    )
    (stop,) = configured_callbacks(cfg)
    assert isinstance(stop, EarlyStopping) and stop.monitor == "val/loss" and stop.patience == 1
    _, trainer = fit(cfg, max_epochs=6)
    assert trainer.current_epoch == 2 and trainer.should_stop  # stopped well before 6


def linear_shapes(module: nn.Module) -> list[tuple[int, int]]:
    return [(m.in_features, m.out_features) for m in module.modules() if isinstance(m, nn.Linear)]


def test_hinton2006_is_the_papers_network():
    model = instantiate_model(compose(["experiment=hinton2006"]))
    assert linear_shapes(model.encoder) == [(784, 1000), (1000, 500), (500, 250), (250, 30)]
    assert linear_shapes(model.decoder) == [(30, 250), (250, 500), (500, 1000), (1000, 784)]
    assert isinstance(model.encoder.net[-1], nn.Identity)  # a linear code layer
    assert isinstance(model.decoder.net[-1], nn.Identity)  # logits; forward applies the sigmoid
    model_2d = instantiate_model(compose(["experiment=hinton2006_2d"]))
    assert linear_shapes(model_2d.encoder)[-1] == (250, 2) and linear_shapes(model_2d.decoder)[0] == (2, 250)


@pytest.mark.parametrize("preset", PRESETS)
def test_latent_dim_is_the_code_size_of_every_model(preset):
    model = instantiate_model(compose([f"experiment={preset}", "model.latent_dim=7"])).eval()
    x = torch.rand(5, 1, 28, 28)
    assert model.encode(x).shape == (5, 7)
    assert model.decode(model.encode(x)).shape == x.shape


def test_conv_uses_strided_convolutions_down_and_transposed_up():
    model = instantiate_model(compose(["experiment=conv"]))
    downs = [m for m in model.encoder.modules() if isinstance(m, nn.Conv2d)]
    ups = [m for m in model.decoder.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert downs and ups and all(m.stride == (2, 2) for m in downs + ups)
    assert not any(isinstance(m, nn.Linear) and m.in_features == 784 for m in model.modules())


@pytest.mark.parametrize("channels", [[8], [4, 8, 16]])
def test_conv_depth_and_odd_sides(channels):
    # Three stride-2 layers take 28 -> 14 -> 7 -> 4; the decoder crops 32 back to 28.
    model = instantiate_model(compose(["experiment=conv", f"model.encoder.channels={channels}"]))
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 1, 28, 28)


@pytest.mark.parametrize(("noise", "level"), [("gaussian", 0.5), ("mask", 0.5)])
def test_denoising_corrupts_only_training_inputs(noise, level, tiny_cfg):
    cfg = tiny(["experiment=denoising", f"model.noise={noise}", f"model.noise_level={level}"], tiny_cfg)
    model = instantiate_model(cfg)
    assert isinstance(model, DenoisingAutoencoder)
    x = torch.rand(64, 1, 28, 28) * 0.5 + 0.25
    noisy = model.corrupt(x)
    assert noisy.shape == x.shape and 0 <= noisy.min() and noisy.max() <= 1
    changed = (noisy != x).float().mean()
    assert changed > 0.4
    if noise == "mask":
        assert torch.all((noisy == x) | (noisy == 0))

    seen = []
    model.encoder.register_forward_pre_hook(lambda _m, args: seen.append(args[0].clone()))
    model.train()
    model.training_step((x, torch.zeros(64)), 0)
    model.validation_step((x, torch.zeros(64)), 0)
    model.eval()
    model(x)
    train_in, val_in, forward_in = seen
    assert not torch.equal(train_in, x)  # training: corrupted input ...
    assert torch.equal(val_in, x) and torch.equal(forward_in, x)  # ... everything else: clean
    model.train()
    assert torch.equal(model(x), model(x))  # forward never corrupts, even in train mode


def test_denoising_level_zero_is_the_plain_autoencoder():
    model = instantiate_model(compose(["experiment=denoising", "model.noise_level=0.0"]))
    x = torch.rand(4, 1, 28, 28)
    assert torch.equal(model.corrupt(x), x)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("scheduler.interval=hour", r"scheduler.interval='hour': allowed: step, epoch"),
        ("+scheduler.warmup=3", r"scheduler: unknown key\(s\) \['warmup'\]; allowed: interval"),
        ("scheduler=onecycle scheduler.interval=epoch", r"OneCycleLR must step per batch"),
        ("scheduler=onecycle scheduler.lr_scheduler.pct_start=1.5", r"pct_start=1.5: must be in"),
        (
            "scheduler=onecycle scheduler.lr_scheduler._target_=torch.optim.lr_scheduler.StepLR",
            r"scheduler.lr_scheduler._target_=torch.optim.lr_scheduler.StepLR: unknown class",
        ),
        ("scheduler=cosine +scheduler.lr_scheduler.T_maxx=3", r"scheduler.lr_scheduler.T_maxx: unknown key"),
        ("model.encoder.norm=group", r"model.encoder.norm='group': allowed: none, batch, layer"),
        ("model.decoder.activation=swish", r"model.decoder.activation='swish': allowed: sigmoid"),
        ("experiment=denoising model.noise=salt", r"model.noise='salt': allowed: gaussian, mask"),
        (
            "experiment=denoising model.noise=mask model.noise_level=1.0",
            r"model.noise_level=1.0: must be >= 0 \(and < 1 for noise=mask\)",
        ),
        ("experiment=denoising model.noise_level=-0.1", r"model.noise_level=-0.1: must be >= 0"),
        ("callbacks.early_stopping.patience=0", r"callbacks.early_stopping.patience=0: must be >= 1"),
        ("callbacks.early_stopping.min_delta=-1", r"min_delta=-1(\.0)?: must be >= 0"),
        ("+callbacks.early_stopping.mode=max", r"callbacks.early_stopping.mode: Key 'mode' not in"),
        ("trainer.gradient_clip_val=-1", r"trainer.gradient_clip_val=-1: must be >= 0 or null"),
        ("experiment=conv model.encoder.channels=abc", r"model.encoder.channels='abc': wrong type"),
    ],
)
def test_bad_building_blocks_name_key_value_and_allowed(override, message):
    cfg = compose(override.split())
    with pytest.raises(ConfigError, match=message):
        validate(cfg)


def test_logged_model_configs_without_training_sections_still_build_the_model():
    # A logged model's config.yaml from a release without `scheduler`/`callbacks` still loads;
    # training, which reads conf/ where both sections always exist, requires them.
    cfg = compose()
    OmegaConf.set_struct(cfg, False)
    del cfg["scheduler"], cfg["callbacks"]
    assert instantiate_model(cfg).scheduler_factory is None
    with pytest.raises(ConfigError, match="callbacks"):
        validate(cfg)
    assert configured_callbacks(compose()) == []  # early stopping is off in conf/


def test_fashion_mnist_config_and_debian_mirror(tmp_path):
    cfg = compose(["data=fashion_mnist", "experiment=hinton2006"])
    validate(cfg)
    assert cfg.data.name == "fashion_mnist" and cfg.data.source.pypi_fallback is None
    assert cfg.data.batch_size == 128  # the preset's training choices apply to any data
    require_system_path(FASHION_MIRROR / "t10k-labels-idx1-ubyte.gz", "dataset-fashion-mnist")
    files = OmegaConf.to_container(cfg.data.files)
    download_dataset(tmp_path, files, [FASHION_MIRROR.as_uri() + "/"])  # verifies every MD5
    assert read_idx(tmp_path / "t10k-images-idx3-ubyte").shape == (10000, 28, 28)
    labels = read_idx(tmp_path / "train-labels-idx1-ubyte")
    assert labels.shape == (60000,) and sorted(set(labels.tolist())) == list(range(10))
