"""Training (the project's `train`, real Lightning Trainer) on a memory-mapped folder pack, under a
cap on the process's own memory: run as a script in its own process by
tests/integration/test_streaming_memory.py.

    python tests/training_memory_probe.py PACK OUT HEADROOM_MB

PACK holds a folder pack (aeflow.data.pack) of RGB images; OUT receives the run's outputs and
MLflow store. Once torch, Lightning and MLflow are imported and the store exists, the process's
data limit (RLIMIT_DATA: heap and private anonymous maps, what `prlimit --data` sets) becomes its
current data size plus HEADROOM_MB. A read-only memory map of the pack is file-backed and does
not count; the training split converted to floats would. Prints one JSON line: the headroom and
the peak growth of the data size (VmData) while training, in MB.
"""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path

from memory_probe import PeakGrowth, folder_overrides  # this script's folder is first on sys.path


def vm_data() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmData:"):
            return int(line.split()[1]) * 1024
    raise KeyError("VmData")


def main(pack: Path, out: Path, headroom_mb: float) -> None:
    import mlflow

    from aeflow.config.params import compose
    from aeflow.training.train import train

    manifest = json.loads((pack / "manifest.json").read_text())
    channels, height, width = manifest["shape"]
    spec = manifest["spec"]
    cfg = compose(
        [
            *folder_overrides(channels, height, width),
            f"data.resize={spec['resize']}",
            f"data.val_size={spec['val_size']}",
            f"data.test_size={spec['test_size']}",
            "data.batch_size=32",
            "data.on_device=false",
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=8",
            "trainer.limit_val_batches=2",
            "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false",
            "performance.num_threads=1",
        ]
    )
    cfg.paths.data = str(pack)
    for key in [k for k in cfg.paths if k not in ("data", "data_source")]:
        cfg.paths[key] = str(out / cfg.paths[key])
    cfg.mlflow.tracking_uri = f"sqlite:///{out / 'mlflow.db'}"
    cfg.mlflow.log_model = False
    mlflow.MlflowClient(cfg.mlflow.tracking_uri).search_experiments()  # creates the store's tables

    peak = PeakGrowth(vm_data)
    limit = peak.start + int(headroom_mb * 1e6)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, resource.getrlimit(resource.RLIMIT_DATA)[1]))
    result = train(cfg)
    growth = peak.stop()
    print(json.dumps({"headroom_mb": headroom_mb, "peak_data_growth_mb": growth, "run_id": result.run_id}))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3]))
