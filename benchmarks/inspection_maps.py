"""Benchmark: anomaly maps and inspection metrics at 256x256 RGB, throughput and peak memory.

Writes `--images` test images (the generated stripe texture, tinted RGB, a defect in
four of five) and their masks straight into memory-mapped uint8 arrays, as the data
stage packs them, then scores them with aeflow.evaluation.inspection.evaluate_inspection:
both maps (L2 and SSIM) and every metric. The reconstruction is a 3x3 box blur, so
that the figures are those of the maps and metrics, not of a network.
Reports images per CPU-second of maps alone and of maps plus metrics, and the process's
peak RSS (VmHWM, reset after the arrays are written; it counts the memory map's pages read).

    python benchmarks/inspection_maps.py --work /tmp/maps --images 2000 --json results/inspection_maps.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

from inspection import cpu_model  # noqa: E402

from aeflow.data.mvtec_synth import DEFECTS, TINT, render  # noqa: E402
from aeflow.evaluation.anomaly_maps import batched_maps  # noqa: E402
from aeflow.evaluation.inspection import InspectionConfig, evaluate_inspection  # noqa: E402
from aeflow.io import write_json  # noqa: E402


def reset_peak_rss() -> None:
    """Start VmHWM afresh (Linux: clear_refs 5), so that the peak is the scoring's, not the writing's."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def write_arrays(work: Path, count: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Memory-mapped uint8 images (N, 3, H, W), masks (N, H, W) and labels (N,); reused when present."""
    work.mkdir(parents=True, exist_ok=True)
    labels = np.arange(count) % (1 + len(DEFECTS))
    try:
        images = np.load(work / "images.npy", mmap_mode="r")
        masks = np.load(work / "masks.npy", mmap_mode="r")
        if images.shape == (count, 3, size, size) and masks.shape == (count, size, size):
            return images, masks, labels
    except (OSError, ValueError):
        pass
    images = np.lib.format.open_memmap(work / "images.npy", "w+", np.uint8, (count, 3, size, size))
    masks = np.lib.format.open_memmap(work / "masks.npy", "w+", np.uint8, (count, size, size))
    for i in range(count):
        kind = None if labels[i] == 0 else DEFECTS[labels[i] - 1]
        intensity, mask = render(np.random.default_rng([0, 2, int(labels[i]), i]), size, kind)
        rgb = intensity[None] * TINT[:, None, None] + (1 - TINT[:, None, None]) * 0.2  # (3, H, W)
        images[i] = np.rint(np.clip(rgb, 0, 1) * 255)
        masks[i] = mask
    images.flush()
    masks.flush()
    del images, masks
    return (np.load(work / "images.npy", mmap_mode="r"), np.load(work / "masks.npy", mmap_mode="r"), labels)


def blur(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", required=True, help="folder for the arrays")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    images_np, masks_np, labels_np = write_arrays(Path(args.work), args.images, args.size)
    images, masks = torch.from_numpy(images_np), torch.from_numpy(masks_np)
    labels = torch.from_numpy(labels_np)
    config = InspectionConfig()
    reset_peak_rss()
    sample = min(256, args.images)
    # CPU seconds of this process, not wall-clock: on a machine shared with other jobs the
    # wall clock counts the time spent waiting for a core.
    start = time.process_time()
    for _ in batched_maps(blur, images[:sample], config.settings(), config.batch_size):
        pass
    maps_per_s = sample / (time.process_time() - start)
    start, wall = time.process_time(), time.perf_counter()
    result = evaluate_inspection({"blur": blur}, images, masks, labels, ["good", *DEFECTS], config)
    scored_per_s = args.images / (time.process_time() - start)
    wall_s = time.perf_counter() - wall
    row = {
        "images": args.images,
        "size": args.size,
        "maps_images_per_cpu_s": round(maps_per_s, 2),
        "maps_and_metrics_images_per_cpu_s": round(scored_per_s, 2),
        "maps_and_metrics_wall_s": round(wall_s, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "torch_threads": torch.get_num_threads(),
        "blur_ssim_pixel_auroc": round(result.metrics["blur_ssim"]["all"]["pixel_auroc"], 4),
    }
    record = {
        "name": Path(args.json).stem if args.json else "inspection_maps",
        "title": f"Anomaly maps and metrics at {args.size}x{args.size} RGB: throughput and peak RSS",
        "command": f"python benchmarks/inspection_maps.py --work {args.work} --images {args.images} "
        f"--size {args.size}",
        "date": datetime.date.today().isoformat(),
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "numerics": "native", "fingerprint": None},
        "rows": [row],
        "notes": f"L2 and SSIM maps of a 3x3 box blur; CPU load {os.getloadavg()[0]:.1f} (1-min average)",
    }
    if args.json:
        write_json(args.json, record)
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
