"""The trained model outside the pipeline: the MLflow pyfunc and the aeflow-encode command."""


def __getattr__(name: str):
    # MLflow models logged by earlier releases pickled their python_model as
    # `aeflow.serving.AutoencoderPyfunc`; resolving the name here keeps them loadable.
    if name == "AutoencoderPyfunc":
        from aeflow.serving.pyfunc import AutoencoderPyfunc

        return AutoencoderPyfunc
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
