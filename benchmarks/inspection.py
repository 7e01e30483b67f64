"""Benchmark: experiment=inspection against the PCA-residual baseline on a generated MVTec-layout set.

1. Generates one category with aeflow.data.mvtec_synth (`--n-train` good training
   images, `--n-test` test images of each type, `--size` square, `--seed`).
2. Packs it as the data stage does for data=mvtec.
3. Trains the preset's conv autoencoder (conf/experiment/inspection.yaml, composed
   with `--set` overrides) with the real Trainer, on the CPU: wall-clock seconds.
4. Scores the test split with L2 and SSIM maps of the model and of PCA
   (aeflow.evaluation.inspection): every metric, overall and per defect type.

    python benchmarks/inspection.py --work /tmp/inspection --json results/inspection.json

Writes a results record (`rows`: one per method and test type) to `--json`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from aeflow.config.params import compose  # noqa: E402
from aeflow.config.schema import validate  # noqa: E402
from aeflow.data.mvtec import from_config, pack_mvtec, spec_from_config  # noqa: E402
from aeflow.data.mvtec_synth import generate  # noqa: E402
from aeflow.evaluation.inspection import InspectionConfig, inspect_model  # noqa: E402
from aeflow.io import write_json  # noqa: E402


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def train(cfg) -> tuple[object, float]:
    """The preset's network trained on the packed training split; (network, seconds)."""
    import pytorch_lightning as pl

    from aeflow.config.instantiate import instantiate_datamodule, instantiate_model

    pl.seed_everything(cfg.seed, workers=True)
    model, datamodule = instantiate_model(cfg), instantiate_datamodule(cfg)
    trainer = pl.Trainer(
        max_epochs=cfg.trainer.max_epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
    )
    start = time.perf_counter()
    trainer.fit(model, datamodule=datamodule)
    return model.net.eval(), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", required=True, help="folder for the generated and packed data")
    parser.add_argument("--n-train", type=int, default=200)
    parser.add_argument("--n-test", type=int, default=20)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", nargs="*", default=[], help="config overrides, e.g. trainer.max_epochs=5")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    work = Path(args.work)
    root = generate(work / "source", "stripes", args.n_train, args.n_test, args.size, args.seed)
    overrides = ["experiment=inspection", f"data.path={root}", f"paths.data={work / 'packed'}", *args.set]
    cfg = compose(overrides, REPO / "conf")
    validate(cfg)
    pack_mvtec(root, cfg.paths.data, spec_from_config(cfg.data), workers=1, progress=False)
    net, seconds = train(cfg)
    start = time.perf_counter()
    result = inspect_model(net, from_config(cfg), InspectionConfig(), seed=cfg.seed)
    inspect_seconds = time.perf_counter() - start
    rows = [
        {"method": method, "type": kind, **values}
        for method, per_type in result.metrics.items()
        for kind, values in per_type.items()
    ]
    command = "python benchmarks/inspection.py " + " ".join(
        [
            f"--work {args.work}",
            f"--n-train {args.n_train}",
            f"--n-test {args.n_test}",
            f"--size {args.size}",
            f"--seed {args.seed}",
        ]
        + ([f"--set {' '.join(args.set)}"] if args.set else [])
    )
    record = {
        "name": Path(args.json).stem if args.json else "inspection",
        "title": "Inspection preset vs the PCA-residual baseline on the generated MVTec-layout set",
        "command": command,
        "date": datetime.date.today().isoformat(),
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "numerics": "native", "fingerprint": None},
        "rows": rows,
        "notes": (
            f"{args.size}x{args.size} grey, {args.n_train} training images, {args.n_test} test images per "
            f"type; training {seconds:.0f} s for {cfg.trainer.max_epochs} epochs, "
            f"scoring {inspect_seconds:.0f} s "
            f"(CPU load {os.getloadavg()[0]:.1f})"
        ),
    }
    if args.json:
        write_json(args.json, record)
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
