"""The MLflow model's code ("models from code"): MLflow runs this file to build the model,
both when logging and when loading it, so the logged model holds code files, the config,
the weights and the anomaly detector (JSON), and loading it unpickles nothing."""

from mlflow.models import set_model

from aeflow.serving.pyfunc import AutoencoderPyfunc

set_model(AutoencoderPyfunc())
