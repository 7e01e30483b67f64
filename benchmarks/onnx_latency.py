"""Benchmark: encode + decode latency of PyTorch and ONNX Runtime, side by side, on the CPU.

The model is a trained checkpoint with its params.yaml (default: the pipeline's
models/best.ckpt), or, with --untrained, a freshly initialised network of the composed
config (latency does not depend on the weights). The encoder and decoder are exported to
ONNX in a temporary folder. For each batch size, measurements of the two runtimes
alternate (so background load hits both alike); the figure is the median over
`--repeats` calls after warm-up. Prints a table, then the JSON.

    python benchmarks/onnx_latency.py                       # the pipeline's trained model
    python benchmarks/onnx_latency.py --untrained -o experiment=conv --threads 1
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def network(args: argparse.Namespace) -> tuple[torch.nn.Module, str]:
    from aeflow.config.instantiate import instantiate_network
    from aeflow.config.params import compose, load_params
    from aeflow.models.weights import load_weights

    if args.untrained:
        torch.manual_seed(0)
        cfg = compose(args.override, conf_dir=REPO / "conf")
        return instantiate_network(cfg).eval(), f"untrained, overrides {args.override or 'none'}"
    cfg = load_params(args.params, sections=("model.networks",))
    return load_weights(cfg, args.checkpoint), f"{args.checkpoint} ({args.params})"


def median_ms(fn, x: torch.Tensor, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", default="models/best.ckpt")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--untrained", action="store_true", help="a fresh network of the composed config")
    parser.add_argument("-o", "--override", action="append", default=[], help="Hydra override (--untrained)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 256])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for both runtimes")
    args = parser.parse_args(argv)

    from aeflow.serving.onnx_export import OnnxAutoencoder, export

    torch.set_num_threads(args.threads)
    model, source = network(args)
    folder = export(model, Path(tempfile.mkdtemp()) / "onnx")
    ort = OnnxAutoencoder(folder, threads=args.threads)

    @torch.no_grad()
    def with_torch(x: torch.Tensor) -> torch.Tensor:
        return model.decode(model.encode(x))

    def with_ort(x: torch.Tensor) -> torch.Tensor:
        return ort.decode(ort.encode(x))

    rows = []
    for batch in args.batches:
        x = torch.rand(batch, 1, 28, 28)
        for fn in (with_torch, with_ort):  # warm-up
            for _ in range(10):
                fn(x)
        torch_ms, ort_ms = [], []
        for _ in range(5):  # alternate blocks of calls
            torch_ms.append(median_ms(with_torch, x, max(1, args.repeats // 5)))
            ort_ms.append(median_ms(with_ort, x, max(1, args.repeats // 5)))
        rows.append(
            {
                "batch": batch,
                "pytorch_ms": statistics.median(torch_ms),
                "onnxruntime_ms": statistics.median(ort_ms),
            }
        )
    result = {
        "model": source,
        "threads": args.threads,
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "onnxruntime": __import__("onnxruntime").__version__,
        "rows": rows,
    }
    print(f"{'batch':>6} {'PyTorch ms':>12} {'ONNX Runtime ms':>16} {'ratio':>7}")
    for r in rows:
        ratio = r["pytorch_ms"] / r["onnxruntime_ms"]
        print(f"{r['batch']:>6} {r['pytorch_ms']:>12.3f} {r['onnxruntime_ms']:>16.3f} {ratio:>7.2f}")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
