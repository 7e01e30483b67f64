"""DVC stage `package`: the served model from the best checkpoint, in `paths.package` (weights,
config, anomaly detector, ONNX files), logged to the pipeline's MLflow run as its MLflow model
(`mlflow.log_model`) and registered as a new version of `mlflow.register_model` (if set), with
the evaluate stage's test metrics as the version's tags.

Loads the plain network, not the LightningModule: nothing here imports Lightning.
"""

from aeflow.stages.common import run_stage

# The config sections this stage reads, validated before any work.
SECTIONS = ("seed", "paths", "mlflow", "data.source", "model.networks", "evaluate")


def main() -> None:
    import json
    from pathlib import Path

    from aeflow.config.params import load_params
    from aeflow.serving import package
    from aeflow.tracking.registry import register_if_configured

    cfg = load_params(sections=SECTIONS)
    package.from_config(cfg)
    register_if_configured(cfg, json.loads(Path(cfg.paths.eval_metrics).read_text()))


if __name__ == "__main__":
    run_stage(main)
