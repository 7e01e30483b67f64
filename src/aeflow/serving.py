"""The MLflow model: an autoencoder served as a pyfunc that encodes or reconstructs.

Weights travel as a state dict loaded with `torch.load(weights_only=True)` and
the network is rebuilt from the saved config, so loading a model never
unpickles a network object.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch
from mlflow.models import infer_signature

OUTPUTS = ("reconstruction", "code")
REQUIREMENTS = ("torch", "pytorch-lightning", "hydra-core", "omegaconf", "mlflow", "numpy")


class AutoencoderPyfunc(mlflow.pyfunc.PythonModel):
    """Input: float32 images (N, 784) in [0, 1]. Param `output`: 'reconstruction' or 'code'."""

    def load_context(self, context: Any) -> None:
        from omegaconf import OmegaConf

        from aeflow.config import instantiate_model

        cfg = OmegaConf.load(context.artifacts["config"])
        self.model = instantiate_model(cfg)
        self.model.load_state_dict(torch.load(context.artifacts["weights"], weights_only=True))
        self.model.eval()

    def predict(self, context, model_input, params=None):  # no hints: MLflow validates by them
        output = (params or {}).get("output", "reconstruction")
        if output not in OUTPUTS:
            raise ValueError(f"params.output={output!r}: allowed: {', '.join(OUTPUTS)}")
        x = torch.as_tensor(np.asarray(model_input, dtype=np.float32))
        with torch.no_grad():
            if output == "code":
                return self.model.encode(x).numpy()
            return self.model(x).reshape(len(x), -1).numpy()


def pinned_requirements() -> list[str]:
    # Explicit pins: MLflow's own inference loads the model in a subprocess (slow).
    return [f"{name}=={importlib.metadata.version(name)}" for name in REQUIREMENTS]


def log_model(module: torch.nn.Module, config_path: str | Path, weights_path: str | Path,
              example: np.ndarray) -> Any:
    """Log `module` (already saved as `weights_path`) to the active run as an MLflow model."""
    import aeflow

    module.eval()
    with torch.no_grad():
        recon = module(torch.as_tensor(example)).reshape(len(example), -1).numpy()
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
