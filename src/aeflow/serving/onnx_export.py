"""The trained encoder and decoder as ONNX files, run by ONNX Runtime with the same interface
(`encode`/`decode` on float tensors) as the PyTorch network, so the same anomaly scores follow.

`encoder.onnx`: images float32 (N, C, H, W) in [0, 1] -> codes (N, latent_dim);
`decoder.onnx`: codes -> reconstructions (N, C, H, W) in [0, 1] (the sigmoid included);
`anomaly_map.onnx`: images -> per-pixel anomaly maps (N, H, W) in [0, 1], the whole network and
aeflow.evaluation.anomaly_maps.anomaly_map (L2 or SSIM, smoothing included) in one graph, with
the map settings it was exported with. The batch dimension is dynamic; H and W are not (the
SSIM and smoothing windows are constant matrices of the image's sides).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from aeflow.evaluation.anomaly_maps import MapSettings

ENCODER, DECODER, MAP = "encoder.onnx", "decoder.onnx", "anomaly_map.onnx"
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


class _Map(_Encode):
    def __init__(self, model: nn.Module, settings: MapSettings) -> None:
        super().__init__(model)
        self.settings = settings
        # One eager map first: its window matrices are then cached (anomaly_maps._blur) and the
        # trace holds them as constants.
        from aeflow.evaluation.anomaly_maps import model_map

        with torch.no_grad():
            model_map(model, torch.rand(1, *model.image_shape), settings)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        from aeflow.evaluation.anomaly_maps import model_map

        return model_map(self.model, images, self.settings, chunk=None)  # chunks would fix the batch size


def _export(module: nn.Module, example: torch.Tensor, path: Path, names: tuple[str, str]) -> None:
    from aeflow.io import atomic_path

    with atomic_path(path) as tmp, warnings.catch_warnings():
        # The TorchScript-based exporter: it needs no extra package (the dynamo one needs onnxscript).
        warnings.simplefilter("ignore", DeprecationWarning)
        # The map's window sizes are Python numbers computed from tensors: constants of the graph.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
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
def export(
    model: nn.Module,
    folder: str | Path,
    image_shape: tuple[int, ...] = (1, 28, 28),
    settings: MapSettings | None = None,
) -> Path:
    """Write `folder`/encoder.onnx and decoder.onnx for `model` (an AutoencoderNet), and with map
    `settings` anomaly_map.onnx; returns `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = model.eval().cpu()
    images = torch.rand(2, *image_shape)
    _export(_Encode(model), images, folder / ENCODER, ("images", "codes"))
    _export(_Decode(model), model.encode(images), folder / DECODER, ("codes", "reconstructions"))
    if settings is not None:
        _export(_Map(model, settings), images, folder / MAP, ("images", "maps"))
    return folder


class OnnxAutoencoder:
    """The exported encoder and decoder (and anomaly map, where exported) in ONNX Runtime sessions
    (CPU), on float32 torch tensors."""

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
        self.folder = folder
        self.mapper = None
        if (folder / MAP).is_file():
            self.mapper = ort.InferenceSession(str(folder / MAP), options, providers=["CPUExecutionProvider"])

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

    def anomaly_map(self, images: torch.Tensor) -> torch.Tensor:
        """(N, H, W) maps of images (N, C, H, W) in [0, 1], with the settings exported."""
        if self.mapper is None:
            raise FileNotFoundError(
                f"{self.folder / MAP}: no anomaly map was exported; export with map settings "
                "(the package stage passes the run's evaluate.inspection)"
            )
        return self._run(self.mapper, images)
