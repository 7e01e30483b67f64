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
from collections.abc import Callable
from pathlib import Path


def rss_anon() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    raise KeyError("RssAnon")


def folder_overrides(channels: int, height: int, width: int) -> list[str]:
    """data=folder with images of (C, H, W), and a small dense model: the data's memory is measured."""
    return [
        "data=folder",
        "data.path=/images",
        f"data.image_size=[{height},{width}]",
        f"data.channels={channels}",
        f"data.input_features={channels * height * width}",
        "model.latent_dim=8",
        "model.encoder.hidden=[16]",
        "model.decoder.hidden=[16]",
    ]


class PeakGrowth:
    """The peak of `read()` (bytes) above its value at start, sampled every 5 ms by a thread."""

    def __init__(self, read: Callable[[], int]) -> None:
        self.read, self.start = read, read()
        self.peak = self.start
        self._done = threading.Event()
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while not self._done.wait(0.005):
            self.peak = max(self.peak, self.read())

    def stop(self) -> float:
        """The peak growth in MB."""
        self._done.set()
        self.peak = max(self.peak, self.read())
        return round((self.peak - self.start) / 1e6, 1)


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
    cfg = compose(folder_overrides(channels, height, width))
    torch.manual_seed(0)
    model = instantiate_network(cfg).eval()
    pca = PCA(8)  # any orthonormal basis: the memory of scoring with it is what is measured
    pca.mean = torch.zeros(channels * height * width, dtype=torch.float64)
    pca.components = torch.linalg.qr(torch.randn(len(pca.mean), 8, dtype=torch.float64)).Q
    pca.explained_variance = torch.ones(8, dtype=torch.float64)

    peak = PeakGrowth(rss_anon)
    fit_detector(cfg, model, splits)
    anomaly_evaluation(model, pca, splits, quantile=0.99)
    config = settings(cfg, "evaluate", EvaluateConfig)
    _, *probes = probe_data(splits["train"], splits["test"], config, seed=0)
    score_codes(model.encode, model.decode, *probes, config, labelled=False)
    print(json.dumps({"peak_anon_growth_mb": peak.stop()}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
