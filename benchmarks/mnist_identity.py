"""Everything the evaluate stage computes for MNIST, written out byte for byte, to check that
a change of the evaluation code leaves the default's figures identical.

A seeded, untrained default model (no training: the check is of the evaluation arithmetic)
is evaluated on the real MNIST splits; written to `--out`: the PCA fit (.npz), evaluate's
metrics and details (JSON), the served detector (JSON), and a hash of each.

    python benchmarks/mnist_identity.py --data data/raw --out /tmp/before
    (change the code)
    python benchmarks/mnist_identity.py --data data/raw --out /tmp/after
    diff /tmp/before/hashes.json /tmp/after/hashes.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="folder of MNIST's four IDX files")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    import torch

    from aeflow.config.instantiate import instantiate_network
    from aeflow.config.params import compose
    from aeflow.evaluation.evaluate import evaluate
    from aeflow.serving.pyfunc import fit_detector

    cfg = compose([f"paths.data={args.data}"], conf_dir=REPO / "conf")
    torch.manual_seed(0)
    model = instantiate_network(cfg).eval()
    result = evaluate(cfg, model)
    args.out.mkdir(parents=True, exist_ok=True)
    result.pca.write(args.out / "pca.npz")
    (args.out / "metrics.json").write_text(json.dumps(result.metrics, indent=1, sort_keys=True))
    (args.out / "details.json").write_text(json.dumps(result.details, indent=1, sort_keys=True))
    from aeflow.data.splits import load_splits

    splits = load_splits(args.data, cfg.data.files, int(cfg.data.val_size), int(cfg.data.split_seed))
    fit_detector(cfg, model, splits).write(args.out / "detector.json")
    pca = result.pca
    arrays = {k: getattr(pca, k).numpy().tobytes() for k in ("mean", "components", "explained_variance")}
    hashes = {k: hashlib.sha256(v).hexdigest() for k, v in arrays.items()}
    for name in ("metrics.json", "details.json", "detector.json"):
        hashes[name] = hashlib.sha256((args.out / name).read_bytes()).hexdigest()
    (args.out / "hashes.json").write_text(json.dumps(hashes, indent=1, sort_keys=True))
    print(json.dumps(hashes, indent=1))


if __name__ == "__main__":
    main()
