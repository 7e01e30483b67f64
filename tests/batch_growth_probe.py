"""Peak anonymous memory of scoring a set of images batch by batch, for `count` images that
are made one batch at a time (nothing holds the set): run in its own process by
tests/integration/test_streaming_memory.py, at two counts, to see whether memory grows
with the number of batches.

    python tests/batch_growth_probe.py COUNT

Prints one JSON line: the peak of RssAnon above its value before the work, in MB.
"""

from __future__ import annotations

import json
import sys

import torch

from tests.memory_probe import PeakGrowth, rss_anon

SHAPE = (3, 64, 64)  # 160 images a batch (aeflow.evaluation.streaming.rows_per_batch)


class Generated:
    """`count` uint8 images of SHAPE, each slice drawn when asked for: an image source whose
    own memory does not grow with `count`."""

    image_shape = SHAPE

    def __init__(self, count: int) -> None:
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, rows: slice) -> torch.Tensor:
        start, stop, _ = rows.indices(self.count)
        gen = torch.Generator().manual_seed(start)
        return torch.randint(0, 256, (stop - start, *SHAPE), dtype=torch.uint8, generator=gen)


def main(count: int) -> None:
    from aeflow.evaluation.anomaly import CodeGaussian, model_scores
    from aeflow.evaluation.metrics import reconstruction_metrics_batched
    from aeflow.evaluation.streaming import per_image

    torch.set_num_threads(1)
    torch.manual_seed(0)
    pixels = 3 * 64 * 64
    basis = torch.linalg.qr(torch.randn(pixels, 8)).Q  # (D, 8): a linear autoencoder

    def encode(x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ basis

    def decode(z: torch.Tensor) -> torch.Tensor:
        return (z @ basis.T).clamp(0, 1).reshape(len(z), *SHAPE)

    images = Generated(count)
    gaussian = CodeGaussian.fit(torch.randn(100, 8), shrinkage=0.5)
    peak = PeakGrowth(rss_anon)
    per_image(encode, images)
    model_scores(encode, decode, gaussian, images)
    reconstruction_metrics_batched(lambda x: decode(encode(x)), images, torch.zeros(count, dtype=torch.long))
    print(json.dumps({"peak_anon_growth_mb": peak.stop()}))


if __name__ == "__main__":
    main(int(sys.argv[1]))
