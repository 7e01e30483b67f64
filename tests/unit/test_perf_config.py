"""The GPU path's configuration, checked on the CPU; stage imports; the benchmark's output."""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
import yaml

from aeflow.config.instantiate import instantiate_datamodule, instantiate_model
from aeflow.config.params import compose
from aeflow.config.schema import validate
from aeflow.data.datamodule import IDXDataModule
from aeflow.errors import ConfigError, TrainingError
from aeflow.stages.imports import import_closure, stage_module
from aeflow.training import performance
from tests.conftest import REPO


def test_download_stage_imports_neither_lightning_nor_mlflow():
    mods = sorted(import_closure(stage_module("download")))  # what the bench's start-up probe imports
    assert "aeflow.data.download" in mods  # the parse found main()'s imports
    code = (
        "import importlib, sys\n"
        f"for m in {mods!r}: importlib.import_module(m)\n"
        "from aeflow.config.params import load_params\n"
        "load_params(sections=('paths', 'data.source'))\n"
        "print(sorted(m for m in ('pytorch_lightning', 'lightning', 'mlflow') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout


def test_gpu_preset_extends_cpu_preset_and_validates():
    cpu, gpu = compose([]).trainer, compose(["trainer=gpu"]).trainer
    validate(compose(["trainer=gpu"]))
    assert gpu.accelerator == "gpu" and gpu.precision == "bf16-mixed" and gpu.deterministic is False
    assert cpu.accelerator == "cpu" and cpu.precision == "32-true" and cpu.deterministic
    assert compose(["trainer.precision=bf16-mixed"]).trainer.precision == "bf16-mixed"  # a plain switch
    # Every other CPU setting carries over (experiment presets still set max_epochs).
    for key in set(cpu) - {"accelerator", "deterministic", "precision"}:
        assert gpu[key] == cpu[key], key


def test_performance_defaults_leave_the_cpu_run_unchanged():
    cfg = compose([])
    conf = yaml.safe_load((REPO / "conf" / "config.yaml").read_text())["performance"]
    assert performance.settings(cfg) == conf  # the switches come from conf/, not from Python
    assert cfg.performance.float32_matmul_precision == "highest" and cfg.performance.compile is False
    assert cfg.data.on_device is None  # auto: host memory on the CPU


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("performance.float32_matmul_precision=fast", "performance.float32_matmul_precision='fast'"),
        ("performance.progress_bar_refresh_rate=0", "performance.progress_bar_refresh_rate=0"),
        ("+performance.cuda_graphs=true", "performance.cuda_graphs"),
        ("performance.compile=maybe", "performance.compile"),
        ("performance.num_threads=0", "performance.num_threads=0"),
    ],
)
def test_bad_performance_values_are_refused(override, message):
    with pytest.raises(ConfigError, match=message.replace("+", "").replace(".", r"\.")):
        validate(compose([override]))


def test_build_trainer_applies_matmul_precision_and_progress_bar_rate(tiny_cfg):
    from aeflow.training.train import build_trainer

    before, threads = torch.get_float32_matmul_precision(), torch.get_num_threads()
    tiny_cfg.performance.float32_matmul_precision = "high"
    tiny_cfg.performance.progress_bar_refresh_rate = 7
    tiny_cfg.performance.num_threads = 1 if threads > 1 else 2
    tiny_cfg.trainer.enable_progress_bar = True
    try:
        trainer = build_trainer(tiny_cfg, callbacks=[], logger=False)
        assert torch.get_float32_matmul_precision() == "high"
        assert torch.get_num_threads() == tiny_cfg.performance.num_threads
    finally:
        torch.set_float32_matmul_precision(before)
        torch.set_num_threads(threads)
    bar = trainer.progress_bar_callback
    assert isinstance(bar, pl.callbacks.TQDMProgressBar) and bar.refresh_rate == 7
    tiny_cfg.trainer.enable_progress_bar = False
    assert build_trainer(tiny_cfg, callbacks=[], logger=False).progress_bar_callback is None


def test_bf16_mixed_precision_trains_on_the_cpu(tiny_cfg):
    # The GPU preset's precision switch, exercised where the tests run.
    dm, model = instantiate_datamodule(tiny_cfg), instantiate_model(tiny_cfg)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=1,
        precision="bf16-mixed",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=dm)
    assert torch.isfinite(trainer.callback_metrics["train/loss"])


def test_compile_switch_compiles_in_place_and_keeps_checkpoint_keys(tiny_cfg):
    model = instantiate_model(tiny_cfg)
    keys = list(model.state_dict())
    assert performance.compile_model(tiny_cfg, model) is model and model.encoder._compiled_call_impl is None
    tiny_cfg.performance.compile = True
    performance.compile_model(tiny_cfg, model)
    assert model.encoder._compiled_call_impl is not None and model.decoder._compiled_call_impl is not None
    assert list(model.state_dict()) == keys


@pytest.mark.parametrize(
    ("on_device", "device", "expected"),
    [
        (None, "cpu", False),
        (None, "cuda", True),
        (None, "meta", True),
        (False, "cuda", False),
        (True, "cpu", True),
    ],
)
def test_data_on_device_default_follows_the_accelerator(tiny_cfg, on_device, device, expected):
    dm = instantiate_datamodule(tiny_cfg, on_device=on_device)
    assert dm.keep_on_device(torch.device(device)) is expected


def test_splits_move_to_the_trainers_device_and_batches_are_sliced_there(tiny_cfg):
    dm: IDXDataModule = instantiate_datamodule(tiny_cfg)
    # A stand-in trainer on the meta device (no GPU needed): the splits follow it.
    dm.trainer = SimpleNamespace(
        strategy=SimpleNamespace(root_device=torch.device("meta")), global_rank=0, world_size=1
    )
    dm.setup("fit")
    assert {x.device.type for x, _ in dm.splits.values()} == {"meta"}
    images, labels = next(iter(dm.train_dataloader()))
    assert images.device.type == "meta" and images.dtype == torch.float32 and images.shape[1:] == (1, 28, 28)


class PoisonAt(pl.Callback):
    """Sets the first encoder weight to NaN before training batch `step`."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.step:
            with torch.no_grad():
                next(pl_module.encoder.parameters()).fill_(float("nan"))


@pytest.mark.parametrize("every", [None, 5])
def test_deferred_finite_check_still_names_the_first_bad_step(tiny_cfg, every):
    model = instantiate_model(tiny_cfg)
    model.finite_check_every_n_steps = every  # None on the CPU: every step
    ran = []

    class Count(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            ran.append(batch_idx)

    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[PoisonAt(3), Count()],
    )
    with pytest.raises(TrainingError, match=r"train loss became nan at epoch 0, step 3:"):
        trainer.fit(model, datamodule=instantiate_datamodule(tiny_cfg))
    # Checked every step: stops at the bad step. Every 5: at the window's end, step 4.
    assert ran == ([0, 1, 2] if every is None else [0, 1, 2, 3])


@pytest.mark.slow
def test_bench_script_smoke_json_structure(tmp_path, mnist_mirror):
    out = tmp_path / "bench.json"
    cmd = [
        sys.executable,
        str(REPO / "benchmarks" / "bench.py"),
        "--models",
        "tutorial",
        "--batches",
        "2",
        "--repeats",
        "1",
        "--warmup",
        "1",
        "--matmul-n",
        "64",
        "--startup-repeats",
        "1",
        "--stages",
        "download",
        "--batch-size",
        "64",
        "--data-dir",
        str(tmp_path / "data"),
        "--mirror",
        mnist_mirror.as_uri() + "/",
        "--json",
        str(out),
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert "Lightning s/s" in proc.stdout  # the table was printed
    assert result["machine"]["matmul_gflops_fp32"] > 0
    (model,) = result["models"]
    assert model["model"] == "tutorial" and model["batch_size"] == 64
    assert model["layers"] == [784, 256, 128, 256, 784]
    for key in (
        "hand_samples_per_s",
        "lightning_samples_per_s",
        "lightning_over_hand",
        "lightning_gflops",
        "lightning_of_peak",
        "lightning_of_peak_cpu_time",
        "data_wait_share",
    ):
        assert model[key] > 0, key
    assert 0 < model["data_wait_share"] < 1
    # Values derived independently: the FLOPs of a training step from the layer sizes (forward 2*in*out,
    # weight gradient 2*in*out, input gradient 2*in*out except for the first layer), and the ratios.
    macs = [a * b for a, b in zip(model["layers"], model["layers"][1:])]
    flops = 4 * macs[0] + 6 * sum(macs[1:])
    assert model["train_flops_per_sample"] == flops == 2_400_256
    assert model["lightning_gflops"] == pytest.approx(model["lightning_samples_per_s"] * flops / 1e9)
    assert model["lightning_over_hand"] == pytest.approx(
        model["lightning_samples_per_s"] / model["hand_samples_per_s"]
    )
    assert model["lightning_of_peak"] == pytest.approx(
        model["lightning_gflops"] / result["machine"]["matmul_gflops_fp32"]
    )
    (stage,) = result["startup"]
    # The whole process, timed from outside, includes the imports and config timed inside it.
    assert stage["stage"] == "download" and stage["process_s"] > stage["imports_s"] + stage["config_s"] > 0
    assert "pytorch_lightning" not in stage["loaded"] and "mlflow" not in stage["loaded"]


@pytest.mark.parametrize("limit", [1.0, 3])
def test_train_loss_is_the_epochs_weighted_mean_and_seen_by_epoch_end_callbacks(tiny_cfg, limit):
    # train/loss is logged once per epoch (not every step); callbacks such as the
    # loss curve must still read this epoch's batch-size-weighted mean loss.
    seen: dict[int, list[tuple[float, int]]] = {}
    at_epoch_end: dict[int, float] = {}

    class Watch(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            seen.setdefault(trainer.current_epoch, []).append((float(outputs["loss"]), len(batch[0])))

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            at_epoch_end[trainer.current_epoch] = float(trainer.callback_metrics["train/loss"])

    tiny_cfg.data.batch_size = 30  # 100 training images: batches of 30, 30, 30, 10
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_train_batches=limit,
        callbacks=[Watch()],
    )
    trainer.fit(instantiate_model(tiny_cfg), datamodule=instantiate_datamodule(tiny_cfg))
    assert sorted(at_epoch_end) == [0, 1]
    for epoch, steps in seen.items():
        assert len(steps) == (4 if limit == 1.0 else 3)
        expected = sum(loss * n for loss, n in steps) / sum(n for _, n in steps)
        assert at_epoch_end[epoch] == pytest.approx(expected, rel=1e-5)
