"""MLflow: the run the stages share, and the model registry."""
