"""Benchmark: a folder of images larger than a memory cap, packed and trained memory-mapped.

1. Generates `--images` synthetic RGB PNGs (`--size` square, 10 class folders) in `--work`
   (not shipped; reused by later runs).
2. Packs them with aeflow.data.pack (a process pool over every core): images/s.
3. Trains one epoch of the conv autoencoder (built from the composed config, data=folder)
   with the real Trainer, each in its own process:
   - memory-mapped, under `prlimit --data=<cap>`: a cap on the process's own
     (anonymous) memory below the packed size. A read-only memory map is file-backed
     page cache, which the kernel may drop at any time, so it does not count;
   - memory-mapped, no cap; and in memory (np.load of every array), no cap;
   - in memory under the cap, which must fail: the data does not fit.
   Each reports training images/s (one epoch, after a warm-up of `--warmup` batches), peak
   RSS (VmHWM: resident memory, file pages of the map included) and peak anonymous RSS.
   `prlimit --as` cannot express this cap: importing torch alone reserves ~3.7 GB of address
   space, and a map of the file counts in full.

    python benchmarks/folder_scale.py --images 130000 --cap-gb 1.5 --json folder_scale.json

130,000 64x64 RGB images are 1.6 GB packed; 1.5 GB is about what the training process needs
with the data memory-mapped (torch and Lightning alone take ~1 GB of it).

Prints the JSON (also written to `--json`).

`--pipeline`: the whole pipeline instead, every stage dvc.yaml lists (in its order, each
stage's `cmd` in its own process, in a temporary copy of the project with params.yaml
composed from conf/ as `dvc exp run` composes it), on generated folders of each of
`--counts` images (e.g. N and 4N), one short epoch of the default MLP; then the largest
count again with every stage under `prlimit --data=<--cap-gb>`; then `--photos` images of
256x256 RGB with the conv preset. Each row: stage, images, peak anonymous memory (RssAnon of
the stage's process tree, summed, sampled every 50 ms: what the stage allocates), peak resident
memory (as `/usr/bin/time` reports it: the largest of its processes, with the file pages of
its memory maps, which grow with the data read but which the kernel drops under pressure) and
wall time; and per stage both peaks' growth from the smallest count to the largest.

    python benchmarks/folder_scale.py --pipeline --counts 15000,60000 --cap-gb 2 --photos 2000 \
        --json results/folder_scale_pipeline.json

The cap is RLIMIT_DATA (`prlimit --data`): what a process may allocate (heap, anonymous
maps), the memory that grows when a stage holds a split as floats. A memory map of the
packed arrays is file-backed and read-only: the kernel drops its pages under pressure, so it
does not count, as in a cgroup whose page cache is reclaimable; a cgroup would need root or
systemd here and would count that cache until reclaimed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
ANON_SAMPLE_S = 0.05  # how often a stage's anonymous memory is sampled
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

from aeflow.data.pack import PackSpec, default_workers, pack_folder  # noqa: E402
from aeflow.io import write_json  # noqa: E402

CLASSES = 10


def _write_chunk(job: tuple[str, int, int, int]) -> None:
    """Images start..stop-1: a colour gradient and a random rectangle, so PNG compresses them as photos."""
    from PIL import Image

    root, start, stop, size = job
    rng = np.random.default_rng(start)
    ramp = np.linspace(0, 1, size, dtype=np.float32)
    for i in range(start, stop):
        colours = rng.uniform(0, 255, (3, 3)).astype(np.float32)
        image = colours[0] * ramp[:, None, None] + colours[1] * ramp[None, :, None] * (
            1 - ramp[:, None, None]
        )
        y, x = rng.integers(0, size - 8, 2)
        image[y : y + rng.integers(4, size - y), x : x + rng.integers(4, size - x)] = colours[2]
        image += rng.normal(0, 4, image.shape)
        folder = Path(root) / f"class_{i % CLASSES}"
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8), "RGB").save(folder / f"{i:07d}.png")


def generate(root: Path, count: int, size: int) -> float:
    """Write the images that are missing; return the seconds it took."""
    import multiprocessing

    for k in range(CLASSES):
        (root / f"class_{k}").mkdir(parents=True, exist_ok=True)
    have = sum(1 for _ in root.glob("class_*/*.png"))
    start = time.perf_counter()
    if have < count:
        jobs = [(str(root), s, min(s + 1000, count), size) for s in range(have, count, 1000)]
        with multiprocessing.get_context("spawn").Pool(default_workers()) as pool:
            pool.map(_write_chunk, jobs)
    return time.perf_counter() - start


def status(key: str, pid: int | str = "self") -> int:
    """A /proc/<pid>/status value in bytes (VmHWM, RssAnon, VmData)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def train_once(data_dir: str, size: int, in_memory: bool, batch_size: int, warmup: int) -> dict:
    """One epoch of the conv autoencoder on the packed data, in this process."""
    import pytorch_lightning as pl
    import torch

    from aeflow.config.instantiate import instantiate_datamodule, instantiate_model
    from aeflow.config.params import compose

    torch.set_num_threads(1)
    cfg = compose(
        [
            "experiment=conv",
            "data=folder",
            f"data.path={data_dir}",
            f"data.image_size=[{size},{size}]",
            "data.channels=3",
            f"data.input_features={3 * size * size}",
            f"data.in_memory={str(in_memory).lower()}",
            f"data.batch_size={batch_size}",
            "data.val_size=0.05",
            "data.test_size=0.05",
            f"paths.data={data_dir}",
        ],
        conf_dir=REPO / "conf",
    )
    peak_anon = [status("RssAnon")]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.1):
            peak_anon[0] = max(peak_anon[0], status("RssAnon"))

    threading.Thread(target=sample, daemon=True).start()
    datamodule, model = instantiate_datamodule(cfg), instantiate_model(cfg)
    datamodule.setup("fit")
    n_train = len(datamodule.splits["train"][1])
    times: list[float] = []

    class Clock(pl.Callback):
        def on_train_batch_start(self, *args) -> None:
            times.append(time.perf_counter())

    trainer = pl.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        limit_val_batches=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Clock()],
    )
    trainer.fit(model, datamodule=datamodule)
    end = time.perf_counter()
    done.set()
    timed = len(times) - warmup
    images = min(n_train, timed * batch_size)  # the last batch may be short
    return {
        "in_memory": in_memory,
        "train_images": n_train,
        "images_per_s": round(images / (end - times[warmup]), 1),
        "peak_rss_gb": round(status("VmHWM") / 1e9, 3),
        "peak_anon_rss_gb": round(peak_anon[0] / 1e9, 3),
    }


def train_in_child(args: argparse.Namespace, in_memory: bool, cap: int | None) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--train-child",
        "--data",
        str(args.work / "packed"),
        "--size",
        str(args.size),
        "--batch-size",
        str(args.batch_size),
        "--warmup",
        str(args.warmup),
    ]
    cmd += ["--in-memory"] if in_memory else []
    if cap is not None:
        cmd = ["prlimit", f"--data={cap}", "--", *cmd]
    # glibc reserves a 64 MB heap arena per thread; never touched, but RLIMIT_DATA counts it.
    env = dict(os.environ, OMP_NUM_THREADS="1", MALLOC_ARENA_MAX="2")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    result = {"cap_gb": None if cap is None else round(cap / 1e9, 3), "exit_code": proc.returncode}
    if proc.returncode == 0:
        result.update(json.loads(proc.stdout.strip().splitlines()[-1]))
    else:
        result["in_memory"] = in_memory
        result["error"] = (proc.stderr.strip().splitlines() or ["(no output)"])[-1][:300]
    print(json.dumps(result), file=sys.stderr, flush=True)
    return result


def stage_commands(project: Path) -> list[tuple[str, str]]:
    """(stage, cmd) of every stage of the project's dvc.yaml, in the file's (dependency) order."""
    import yaml

    stages = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    return [(name, stage["cmd"]) for name, stage in stages.items()]


def tree_anon_bytes(root: int) -> int:
    """Anonymous resident memory (RssAnon) of process `root` and its descendants, summed: the
    memory a stage allocates, without the file pages of its memory maps, which the kernel may
    drop at any time (and which VmHWM counts)."""
    import psutil

    total = 0
    try:
        procs = [psutil.Process(root)]
        procs += procs[0].children(recursive=True)
    except psutil.NoSuchProcess:
        return 0
    for proc in procs:
        try:
            total += status("RssAnon", proc.pid)
        except (FileNotFoundError, ProcessLookupError, KeyError):
            pass  # ended between the listing and the read (a zombie's status has no RssAnon)
    return total


def run_stage(project: Path, cmd: str, cap: int | None) -> dict:
    """One stage's command under /usr/bin/time (and prlimit): peak RSS (the largest of its
    processes, file pages of memory maps included), peak anonymous memory of its process tree
    (sampled every `ANON_SAMPLE_S`), wall time, exit code."""
    import shlex

    argv = ["/usr/bin/time", "-f", "aeflow-time %M %e", *shlex.split(cmd)]
    if cap is not None:
        argv = ["prlimit", f"--data={cap}", "--", *argv]
    env = dict(os.environ, PYTHONPATH=str(project / "src"), MALLOC_ARENA_MAX="2")
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    env.pop("MLFLOW_TRACKING_URI", None)
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(argv, cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=err, text=True)
        peak_anon = 0
        while proc.poll() is None:
            peak_anon = max(peak_anon, tree_anon_bytes(proc.pid))
            time.sleep(ANON_SAMPLE_S)
        err.seek(0)
        stderr = err.read()
    timed = [ln.split() for ln in stderr.splitlines() if ln.startswith("aeflow-time ")]
    row = {"exit_code": proc.returncode, "peak_anon_mb": round(peak_anon / 2**20, 1)}
    if timed:
        row.update(peak_rss_mb=round(int(timed[-1][1]) / 1024, 1), time_s=float(timed[-1][2]))
    if proc.returncode:
        # The stage's own last line, not /usr/bin/time's "Command exited with non-zero status".
        lines = [
            ln
            for ln in stderr.splitlines()
            if ln.strip() and not ln.startswith(("aeflow-time", "Command exited with non-zero status"))
        ]
        row["error"] = (lines or ["(no output)"])[-1][:300]
    return row


def pipeline(images: Path, size: int, overrides: list[str], cap: int | None, label: str) -> list[dict]:
    """Every stage on the folder `images` in a fresh copy of the project; one row per stage."""
    import shutil

    from pipeline import copy_project  # benchmarks/pipeline.py (benchmarks/ is on sys.path)

    project = Path(tempfile.mkdtemp(prefix="aeflow-folder-pipeline-"))
    try:
        copy_project(project)
        features = 3 * size * size
        composed = [
            "data=folder",
            f"data.path={images}",
            f"data.image_size=[{size},{size}]",
            "data.channels=3",
            f"data.input_features={features}",
            "trainer.max_epochs=1",
            "trainer.enable_progress_bar=false",
            *overrides,
        ]
        env = dict(os.environ, PYTHONPATH=str(project / "src"))
        subprocess.run(
            [sys.executable, "-m", "aeflow.config", *composed],
            cwd=project,
            env=env,
            check=True,
            capture_output=True,
        )
        count = sum(1 for _ in images.rglob("*.png"))
        rows = []
        for stage, cmd in stage_commands(project):
            row = {"run": label, "stage": stage, "images": count, "cap_gb": cap and round(cap / 1e9, 3)}
            row.update(run_stage(project, cmd, cap))
            print(json.dumps(row), file=sys.stderr, flush=True)
            rows.append(row)
            if row["exit_code"]:
                break
        return rows
    finally:
        shutil.rmtree(project, ignore_errors=True)


def record_rows(runs: list[dict], small: int, large: int) -> list[dict]:
    """One row per stage, for `aeflow record folder-scale --rows`: peak anonymous memory (MB) and
    time (s) at each count, the growth from `small` to `large`, and the capped and photo runs."""

    def cell(run: str, stage: str, images: int | None = None) -> dict | None:
        return next(
            (r for r in runs if r["run"] == run and r["stage"] == stage and images in (None, r["images"])),
            None,
        )

    out = []
    for stage in dict.fromkeys(r["stage"] for r in runs):
        row: dict = {"stage": stage}
        for label, found in (
            (f"{small:,}", cell("scale", stage, small)),
            (f"{large:,}", cell("scale", stage, large)),
            ("capped", cell("capped", stage)),
            ("photos", cell("photos-conv", stage)),
        ):
            if found is None:
                continue
            row[f"{label}: anon MB"] = found.get("peak_anon_mb")
            row[f"{label}: s"] = found.get("time_s") if not found["exit_code"] else "failed"
        few, many = cell("scale", stage, small), cell("scale", stage, large)
        if few and many and few.get("peak_anon_mb"):
            row["anon growth"] = round(many["peak_anon_mb"] / few["peak_anon_mb"], 3)
        out.append(row)
    return out


def growth(rows: list[dict], small: int, large: int) -> list[dict]:
    """Per stage, peak memory and time at the largest count over those at the smallest."""
    by = {(r["stage"], r["images"]): r for r in rows if r["run"] == "scale" and "peak_rss_mb" in r}
    out = []
    for (stage, n), row in by.items():
        big = by.get((stage, large))
        if n == small and big:
            out.append(
                {
                    "stage": stage,
                    "peak_anon_growth": round(big["peak_anon_mb"] / row["peak_anon_mb"], 3),
                    "peak_rss_growth": round(big["peak_rss_mb"] / row["peak_rss_mb"], 3),
                    "time_growth": round(big["time_s"] / max(row["time_s"], 1e-9), 2),
                }
            )
    return out


def main_pipeline(args: argparse.Namespace) -> dict:
    counts = sorted(int(c) for c in args.counts.split(","))
    parts = set(args.parts.split(","))
    rows: list[dict] = []
    if "scale" in parts:
        for count in counts:
            folder = args.work / f"images-{args.size}-{count}"
            generate(folder, count, args.size)
            rows += pipeline(folder, args.size, args.override, None, "scale")
    cap = int(args.cap_gb * 1e9)
    cap_size = args.cap_size or args.size
    if "capped" in parts:
        largest = args.work / f"images-{cap_size}-{counts[-1]}"
        generate(largest, counts[-1], cap_size)
        rows += pipeline(largest, cap_size, args.override, cap, "capped")
    if args.photos and "photos" in parts:
        photos = args.work / f"images-256-{args.photos}"
        generate(photos, args.photos, 256)
        rows += pipeline(photos, 256, ["experiment=conv", *args.override], None, "photos-conv")
    return {
        "counts": counts,
        "size": args.size,
        "cap_size": cap_size,
        "cap_gb": round(cap / 1e9, 3),
        "load_avg_1min_at_end": os.getloadavg()[0],
        "stage_runs": rows,
        "growth": growth(rows, counts[0], counts[-1]),
        "rows": record_rows(rows, counts[0], counts[-1]),
        "cpu": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "aeflow-folder-scale")
    parser.add_argument("--images", type=int, default=130_000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--cap-gb", type=float, default=1.5, help="the memory cap (prlimit --data), GB")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--warmup", type=int, default=5, help="batches left out of the throughput")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--train-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--in-memory", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--pipeline", action="store_true", help="every stage, at each of --counts")
    parser.add_argument("--counts", default="15000,60000", help="--pipeline: images per folder")
    parser.add_argument("--photos", type=int, default=0, help="--pipeline: 256x256 RGB images, conv")
    parser.add_argument("--override", action="append", default=[], help="--pipeline: a Hydra override")
    parser.add_argument("--cap-size", type=int, help="--pipeline: the capped run's side (default --size)")
    parser.add_argument(
        "--parts", default="scale,capped,photos", help="--pipeline: which runs (scale, capped, photos)"
    )
    args = parser.parse_args()
    if args.pipeline:
        result = main_pipeline(args)
        print(json.dumps(result, indent=2))
        if args.json:
            write_json(args.json, result)
        return
    if args.train_child:
        print(json.dumps(train_once(args.data, args.size, args.in_memory, args.batch_size, args.warmup)))
        return

    gen_s = generate(args.work / "images", args.images, args.size)
    start = time.perf_counter()
    spec = PackSpec((args.size, args.size), channels=3, val_size=0.05, test_size=0.05)
    manifest = pack_folder(args.work / "images", args.work / "packed", spec, progress=True)
    pack_s = time.perf_counter() - start
    packed = sum(p.stat().st_size for p in (args.work / "packed").glob("*_images.npy"))
    cap = int(args.cap_gb * 1e9)
    runs = [
        train_in_child(args, in_memory=False, cap=cap),
        train_in_child(args, in_memory=False, cap=None),
        train_in_child(args, in_memory=True, cap=None),
        train_in_child(args, in_memory=True, cap=cap),
    ]
    mapped, loaded = runs[1], runs[2]
    result = {
        "images": sum(manifest["counts"].values()),
        "image_shape": manifest["shape"],
        "generate_s": round(gen_s, 1),
        "pack_workers": default_workers(),
        "pack_images_per_s": round(sum(manifest["counts"].values()) / pack_s, 1),
        "packed_gb": round(packed / 1e9, 3),
        "cap_gb": round(cap / 1e9, 3),
        "runs": runs,
        "mapped_over_in_memory_throughput": (
            round(mapped["images_per_s"] / loaded["images_per_s"], 3)
            if "images_per_s" in mapped and "images_per_s" in loaded
            else None
        ),
        "cpu": os.cpu_count(),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        write_json(args.json, result)


if __name__ == "__main__":
    main()
