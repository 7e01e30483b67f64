"""The names a model config may choose from, and the rules on their settings, in one place.

Names only (no torch), so the config schema can check a value before anything
is built without making every stage that validates its config depend on the
networks themselves.
"""

from __future__ import annotations

ACTIVATIONS = ("sigmoid", "relu", "elu", "leaky_relu", "tanh", "gelu", "silu", "identity")
# Normalisation after each hidden linear/conv layer (before its activation).
NORMS = ("none", "batch", "layer")
# Reconstruction losses (aeflow.models.autoencoder.reconstruction_loss).
LOSSES = ("mse", "bce")
# Input corruption of a denoising autoencoder (training only).
NOISES = ("gaussian", "mask")
# When a learning-rate schedule steps: after every optimizer step, or every epoch.
SCHEDULER_INTERVALS = ("step", "epoch")


def noise_problem(noise: str, level: float) -> str | None:
    """What is wrong with a denoising autoencoder's `noise` and `noise_level`, or None.

    gaussian: N(0, level^2) per pixel, any level >= 0; mask: each pixel dropped with
    probability `level`, so 0 <= level < 1.
    """
    if noise not in NOISES:
        return f"noise={noise!r}: allowed: {', '.join(NOISES)}"
    if not 0 <= level or (noise == "mask" and level >= 1):
        return f"noise_level={level}: must be >= 0 (and < 1 for noise=mask)"
    return None
