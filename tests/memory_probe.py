"""Peak anonymous memory of the anomaly evaluation, the served detector's fit and the test
set's scoring (reconstruction, compression, the probes' subsample) on uint8 splits
memory-mapped from .npy files: run as a script in its own process by
tests/integration/test_streaming_memory.py (and on older code, to compare).

    python tests/memory_probe.py DIR   # DIR holds {train,val,test}_images.npy, uint8 (N, C, H, W)

Prints one JSON line: the peak of RssAnon above its value before the work, in MB.
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path


def rss_anon() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    raise KeyError("RssAnon")


def main(folder: Path) -> None:
    import numpy as np
    import torch

    from aeflow.config.instantiate import instantiate_network
    from aeflow.config.params import compose
    from aeflow.config.schema import EvaluateConfig
    from aeflow.evaluation.pca import PCA
    from aeflow.evaluation.protocols import anomaly_evaluation
    from aeflow.evaluation.scoring import probe_data, score_codes, settings
    from aeflow.serving.pyfunc import fit_detector

    torch.set_num_threads(1)
    splits = {}
    for split in ("train", "val", "test"):
        mapped = np.load(folder / f"{split}_images.npy", mmap_mode="c")  # file-backed, copy-on-write
        splits[split] = (torch.from_numpy(mapped), torch.zeros(len(mapped), dtype=torch.long))
    channels, height, width = splits["train"][0].shape[1:]
    cfg = compose(
        [
            "data=folder",
            "data.path=/images",
            f"data.image_size=[{height},{width}]",
            f"data.channels={channels}",
            f"data.input_features={channels * height * width}",
            "model.latent_dim=8",
            "model.encoder.hidden=[16]",
            "model.decoder.hidden=[16]",
        ]
    )
    torch.manual_seed(0)
    model = instantiate_network(cfg).eval()
    pca = PCA(8)  # any orthonormal basis: the memory of scoring with it is what is measured
    pca.mean = torch.zeros(channels * height * width, dtype=torch.float64)
    pca.components = torch.linalg.qr(torch.randn(len(pca.mean), 8, dtype=torch.float64)).Q
    pca.explained_variance = torch.ones(8, dtype=torch.float64)

    before = rss_anon()
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.005):
            peak[0] = max(peak[0], rss_anon())

    threading.Thread(target=sample, daemon=True).start()
    fit_detector(cfg, model, splits)
    anomaly_evaluation(model, pca, splits, quantile=0.99)
    config = settings(cfg, "evaluate", EvaluateConfig)
    _, *probes = probe_data(splits["train"], splits["test"], config, seed=0)
    score_codes(model.encode, model.decode, *probes, config, labelled=False)
    done.set()
    peak[0] = max(peak[0], rss_anon())
    print(json.dumps({"peak_anon_growth_mb": round((peak[0] - before) / 1e6, 1)}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
