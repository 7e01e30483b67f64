"""The trained encoder and decoder as ONNX files, run by ONNX Runtime with the same interface
(`encode`/`decode` on float tensors) as the PyTorch network, so the same anomaly scores follow.

`encoder.onnx`: images float32 (N, 1, H, W) in [0, 1] -> codes (N, latent_dim);
`decoder.onnx`: codes -> reconstructions (N, 1, H, W) in [0, 1] (the sigmoid included).
The batch dimension is dynamic.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

ENCODER, DECODER = "encoder.onnx", "decoder.onnx"
OPSET = 17


class _Encode(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.encode(images)


class _Decode(_Encode):
    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return self.model.decode(codes)


def _export(module: nn.Module, example: torch.Tensor, path: Path, names: tuple[str, str]) -> None:
    from aeflow.io import atomic_path

    with atomic_path(path) as tmp, warnings.catch_warnings():
        # The TorchScript-based exporter: it needs no extra package (the dynamo one needs onnxscript).
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            module,
            (example,),
            str(tmp),
            dynamo=False,
            opset_version=OPSET,
            input_names=[names[0]],
            output_names=[names[1]],
            dynamic_axes={names[0]: {0: "batch"}, names[1]: {0: "batch"}},
        )


@torch.no_grad()
def export(model: nn.Module, folder: str | Path, image_shape: tuple[int, ...] = (1, 28, 28)) -> Path:
    """Write `folder`/encoder.onnx and decoder.onnx for `model` (an AutoencoderNet); returns `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = model.eval().cpu()
    images = torch.rand(2, *image_shape)
    _export(_Encode(model), images, folder / ENCODER, ("images", "codes"))
    _export(_Decode(model), model.encode(images), folder / DECODER, ("codes", "reconstructions"))
    return folder


class OnnxAutoencoder:
    """The exported encoder and decoder in ONNX Runtime sessions (CPU), on float32 torch tensors."""

    def __init__(self, folder: str | Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = options.inter_op_num_threads = threads
        folder = Path(folder)
        self.encoder = ort.InferenceSession(
            str(folder / ENCODER), options, providers=["CPUExecutionProvider"]
        )
        self.decoder = ort.InferenceSession(
            str(folder / DECODER), options, providers=["CPUExecutionProvider"]
        )

    @staticmethod
    def _run(session, x: torch.Tensor) -> torch.Tensor:
        feed = {
            session.get_inputs()[0].name: np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        }
        return torch.from_numpy(session.run(None, feed)[0])

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self._run(self.encoder, images)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self._run(self.decoder, codes)
