"""The names a model config may choose from, in one place.

Names only (no torch), so the config schema can check a value before anything
is built without making every stage that validates its config depend on the
networks themselves.
"""

ACTIVATIONS = ("sigmoid", "relu", "elu", "leaky_relu", "tanh", "gelu", "silu", "identity")
# Normalisation after each hidden linear/conv layer (before its activation).
NORMS = ("none", "batch", "layer")
# Input corruption of a denoising autoencoder (training only).
NOISES = ("gaussian", "mask")
