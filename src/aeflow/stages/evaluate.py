"""DVC stage `evaluate`: test-set metrics to `paths.eval_metrics` and the MLflow run."""

from aeflow.stages.common import run_stage


def main() -> None:
    import mlflow

    from aeflow import tracking
    from aeflow.checkpoints import BEST, checkpoint_path, load_weights
    from aeflow.config import instantiate_datamodule, load_params
    from aeflow.evaluation import evaluate
    from aeflow.io import write_json

    cfg = load_params()
    model = load_weights(cfg, checkpoint_path(cfg, BEST))
    results = evaluate(cfg, model, instantiate_datamodule(cfg))
    write_json(cfg.paths.eval_metrics, results)
    with tracking.resume_run(cfg.paths.run_info, cfg.mlflow.tracking_uri):
        mlflow.log_metrics({k.replace(".", "/"): v for k, v in tracking.flatten(results).items()})
    from aeflow.registry import register_if_configured  # issue 7: model registry (mlflow.register_model)

    register_if_configured(cfg, results)


if __name__ == "__main__":
    run_stage(main)
