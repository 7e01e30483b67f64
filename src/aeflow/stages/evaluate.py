"""DVC stage `evaluate`: test-set metrics to `paths.eval_metrics` (DVC metrics), per-digit
details and the worst images to `paths.eval_details`, the per-digit DVC plot to
`paths.per_digit`, the fitted PCA to `paths.pca` (for visualize); all of it logged to the MLflow run.

Loads the plain network, not the LightningModule: nothing here imports Lightning.
"""

from aeflow.stages.common import run_stage

# The config sections this stage reads, validated before any work.
SECTIONS = ("seed", "paths", "mlflow", "data.source", "model.networks", "evaluate")


def main() -> None:
    from aeflow.config.params import load_params
    from aeflow.data import packed_splits
    from aeflow.evaluation.evaluate import evaluate
    from aeflow.io import write_csv, write_json
    from aeflow.models.weights import BEST, checkpoint_path, load_weights

    cfg = load_params(sections=SECTIONS)
    # data=folder: the packed arrays; MNIST-family data: None, and evaluate reads the IDX files.
    result = evaluate(cfg, load_weights(cfg, checkpoint_path(cfg, BEST)), packed_splits.from_config(cfg))
    write_json(cfg.paths.eval_metrics, result.metrics)
    write_json(cfg.paths.eval_details, result.details)
    write_csv(cfg.paths.per_digit, result.per_digit_rows)
    result.pca.write(cfg.paths.pca)
    log_to_run(cfg, result.metrics)


def log_to_run(cfg, metrics: dict) -> None:
    """The metrics and files into the pipeline's MLflow run; the model registered if configured."""
    import mlflow  # only here: importing MLflow is a good part of a stage's start-up

    from aeflow.evaluation.evaluate import MODEL
    from aeflow.evaluation.metrics import LABELS, SKIPPED, SQ_ERR
    from aeflow.tracking import lineage
    from aeflow.tracking import runs as tracking
    from aeflow.tracking.registry import register_if_configured

    with tracking.resume_run(cfg.paths.run_info, cfg.mlflow.tracking_uri):
        flat = tracking.flatten({k: v for k, v in metrics.items() if k != SKIPPED})
        mlflow.log_metrics({k.replace(".", "/"): v for k, v in flat.items()})
        if SKIPPED in metrics:  # words, not a number: what the data had no labels for
            mlflow.set_tag(f"evaluate.{SKIPPED}", metrics[SKIPPED])
        lineage.describe_run(cfg, f"test {LABELS[SQ_ERR][0]}", metrics[MODEL][SQ_ERR])
        for path in (cfg.paths.eval_metrics, cfg.paths.eval_details, cfg.paths.per_digit):
            mlflow.log_artifact(path, artifact_path="metrics")
    register_if_configured(cfg, metrics)


if __name__ == "__main__":
    run_stage(main)
