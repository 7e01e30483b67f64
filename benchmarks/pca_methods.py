"""PCA's streamed methods against its exact fit on MNIST's training split, where all can run:
captured variance (sum of the k explained variances) and the test images' mean squared
reconstruction error per image, as ratios to the exact fit's, and each fit's time.

    python benchmarks/pca_methods.py --data data/raw --json results/pca_methods.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="folder of MNIST's four IDX files")
    parser.add_argument("--components", default="30,128")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from aeflow.config.params import compose
    from aeflow.data.splits import load_splits
    from aeflow.evaluation import pca as P
    from aeflow.io import write_json

    cfg = compose([f"paths.data={args.data}"], conf_dir=REPO / "conf")
    splits = load_splits(args.data, cfg.data.files, int(cfg.data.val_size), int(cfg.data.split_seed))
    train, test = splits["train"][0], splits["test"][0].double().flatten(1) / 255.0

    def error(p: P.PCA) -> float:
        return float((p.decode(p.encode(test)) - test).pow(2).sum(1).mean())

    rows = []
    for k in (int(c) for c in args.components.split(",")):
        fits = {}
        for method in (P.EXACT, P.COVARIANCE, P.RANDOMIZED):
            start = time.perf_counter()
            fits[method] = P.fit_images(train, k, method=method)
            fits[method].seconds = time.perf_counter() - start
        exact = fits[P.EXACT]
        for method, fit in fits.items():
            rows.append(
                {
                    "method": method,
                    "components": k,
                    "variance_ratio": float(fit.explained_variance.sum() / exact.explained_variance.sum()),
                    "recon_error_ratio": error(fit) / error(exact),
                    "test_sq_err_per_image": error(fit),
                    "fit_s": round(fit.seconds, 2),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in ln
        ),
        platform.processor(),
    )
    record = {
        "name": "pca_methods",
        "title": "PCA baseline: streamed and randomized fits against the exact fit (MNIST training split)",
        "command": "python benchmarks/pca_methods.py --data data/raw --json results/pca_methods.json",
        "date": datetime.date.today().isoformat(),
        "machine": {"cpu": cpu, "cores": os.cpu_count(), "numerics": "native", "fingerprint": None},
        "rows": rows,
        "notes": f"randomized: {P.ITERATIONS} power iterations, {P.OVERSAMPLE} extra directions, seed 0; "
        f"fit times on a shared machine (load {os.getloadavg()[0]:.1f})",
    }
    if args.json:
        write_json(args.json, record)


if __name__ == "__main__":
    main()
