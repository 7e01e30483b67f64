"""DVC stage `evaluate`: test-set metrics to `paths.eval_metrics` (DVC metrics), per-digit
details and the worst images to `paths.eval_details`, the per-digit DVC plot to
`paths.per_digit`; all of it logged to the MLflow run."""

from aeflow.stages.common import run_stage


def main() -> None:
    import mlflow

    from aeflow.config.instantiate import instantiate_datamodule
    from aeflow.config.params import load_params
    from aeflow.evaluation.evaluate import MODEL, evaluate, write_rows_csv
    from aeflow.evaluation.metrics import LABELS, SQ_ERR
    from aeflow.io import write_json
    from aeflow.models.weights import BEST, checkpoint_path, load_weights
    from aeflow.tracking import lineage
    from aeflow.tracking import runs as tracking

    cfg = load_params()
    model = load_weights(cfg, checkpoint_path(cfg, BEST))
    result = evaluate(cfg, model, instantiate_datamodule(cfg))
    write_json(cfg.paths.eval_metrics, result.metrics)
    write_json(cfg.paths.eval_details, result.details)
    write_rows_csv(cfg.paths.per_digit, result.per_digit_rows)
    with tracking.resume_run(cfg.paths.run_info, cfg.mlflow.tracking_uri):
        mlflow.log_metrics(tracking.metric_keys(result.metrics))
        lineage.describe_run(cfg, f"test {LABELS[SQ_ERR][0]}", result.metrics[MODEL][SQ_ERR])
        for path in (cfg.paths.eval_metrics, cfg.paths.eval_details, cfg.paths.per_digit):
            mlflow.log_artifact(path, artifact_path="metrics")
    from aeflow.tracking.registry import (
        register_if_configured,  # issue 7: model registry (mlflow.register_model)
    )

    register_if_configured(cfg, result.metrics)


if __name__ == "__main__":
    run_stage(main)
