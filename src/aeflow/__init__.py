"""aeflow: a reproducible autoencoder workflow (DVC + Hydra + Lightning + MLflow)."""

__version__ = "0.1.0"
