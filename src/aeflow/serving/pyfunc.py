"""The MLflow model: an autoencoder served as a pyfunc that encodes or reconstructs.

Weights travel as a state dict loaded with `torch.load(weights_only=True)` and
the network is rebuilt from the saved config, so loading a model never
unpickles a network object.
"""

from __future__ import annotations

import importlib.metadata
import math
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch
from mlflow.models import infer_signature

OUTPUTS = ("reconstruction", "code")
REQUIREMENTS = ("torch", "pytorch-lightning", "hydra-core", "omegaconf", "mlflow", "numpy")


class AutoencoderPyfunc(mlflow.pyfunc.PythonModel):
    """Input: float32 images (N, 784) in [0, 1]. Param `output`: 'reconstruction' (N, 784) or 'code'.

    Served by `mlflow models serve`: POST /invocations
    {"inputs": [[...784 floats...]], "params": {"output": "code"}}.
    """

    def load_context(self, context: Any) -> None:
        from omegaconf import OmegaConf

        from aeflow.config.instantiate import instantiate_model

        cfg = OmegaConf.load(context.artifacts["config"])
        self.model = instantiate_model(cfg)
        self.model.load_state_dict(torch.load(context.artifacts["weights"], weights_only=True))
        self.model.eval()

    def predict(self, context, model_input, params=None):  # no hints: MLflow validates by them
        return predict(self.model, model_input, (params or {}).get("output", "reconstruction"))


def as_images(model_input: Any) -> torch.Tensor:
    """(N, H*W) or (N, H, W) or (N, 1, H, W) values in [0, 1] -> float32 (N, 1, H, W), as in training."""
    x = torch.as_tensor(np.asarray(model_input, dtype=np.float32))
    if x.ndim == 2:
        side = math.isqrt(x.shape[1])
        if side * side != x.shape[1]:
            raise ValueError(f"expected square images flattened to H*W columns, got {x.shape[1]} columns")
        x = x.reshape(len(x), side, side)
    if x.ndim == 3:
        x = x.unsqueeze(1)
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"expected (N, H*W), (N, H, W) or (N, 1, H, W) images, got shape {tuple(x.shape)}")
    return x


def predict(model: torch.nn.Module, model_input: Any, output: str = "reconstruction") -> np.ndarray:
    """Codes (N, latent_dim) or flattened reconstructions (N, H*W) in [0, 1] for images in [0, 1]."""
    if output not in OUTPUTS:
        raise ValueError(f"params.output={output!r}: allowed: {', '.join(OUTPUTS)}")
    x = as_images(model_input)
    with torch.no_grad():
        if output == "code":
            return model.encode(x).reshape(len(x), -1).numpy()
        return model(x).reshape(len(x), -1).numpy()


def pinned_requirements() -> list[str]:
    # Explicit pins: MLflow's own inference loads the model in a subprocess (slow).
    return [f"{name}=={importlib.metadata.version(name)}" for name in REQUIREMENTS]


def log_model(
    module: torch.nn.Module, config_path: str | Path, weights_path: str | Path, example: np.ndarray
) -> Any:
    """Log `module` (already saved as `weights_path`) to the active run as an MLflow model."""
    import aeflow

    module.eval()
    recon = predict(module, example)
    signature = infer_signature(example, recon, params={"output": "reconstruction"})
    return mlflow.pyfunc.log_model(
        name="model",
        python_model=AutoencoderPyfunc(),
        artifacts={"weights": str(weights_path), "config": str(config_path)},
        code_paths=[str(Path(aeflow.__file__).parent)],
        signature=signature,
        input_example=example,
        pip_requirements=pinned_requirements(),
    )
