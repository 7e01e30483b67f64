"""DVC stage `evaluate`: test-set metrics to `paths.eval_metrics` (DVC metrics), per-digit
details and the worst images to `paths.eval_details`, the per-digit DVC plot to
`paths.per_digit`; all of it logged to the MLflow run.

PCA's and the raw pixels' numbers are the baselines stage's (`paths.baselines`). Loads the plain
network, not the LightningModule: nothing here imports Lightning.
"""

from aeflow.stages.common import run_stage

# The config sections this stage reads, validated before any work.
SECTIONS = ("seed", "paths", "mlflow", "data.source", "model.networks", "evaluate")


def main() -> None:
    from aeflow.config.params import load_params
    from aeflow.data.schema import MVTEC_DATA
    from aeflow.evaluation.baselines import Baselines
    from aeflow.evaluation.evaluate import evaluate
    from aeflow.io import write_csv, write_json
    from aeflow.models.weights import BEST, checkpoint_path, load_weights

    cfg = load_params(sections=SECTIONS)
    if cfg.data.get("_target_") == MVTEC_DATA:
        return inspect(cfg)
    model = load_weights(cfg, checkpoint_path(cfg, BEST))
    result = evaluate(cfg, model, baselines=Baselines.load(cfg.paths.baselines))
    write_json(cfg.paths.eval_metrics, result.metrics)
    write_json(cfg.paths.eval_details, result.details)
    write_csv(cfg.paths.per_digit, result.per_digit_rows)
    log_to_run(cfg, result.metrics)


def inspect(cfg) -> None:
    """data=mvtec: the anomaly maps' metrics per defect type instead of the label probes
    (aeflow.evaluation.inspection_stages); the DVC plot rows hold each type's AUPRO."""
    import mlflow

    from aeflow.evaluation import inspection_stages
    from aeflow.io import write_csv, write_json
    from aeflow.models.weights import BEST, checkpoint_path, load_weights
    from aeflow.tracking import lineage
    from aeflow.tracking import runs as tracking

    inspection_stages.settings(cfg)  # every map setting checked before the model loads
    metrics, details = inspection_stages.evaluate(cfg, load_weights(cfg, checkpoint_path(cfg, BEST)))
    write_json(cfg.paths.eval_metrics, metrics)
    write_json(cfg.paths.eval_details, details)
    rows = inspection_stages.plot_rows(metrics)
    write_csv(cfg.paths.per_digit, rows)
    with tracking.resume_run(cfg.paths.run_info, cfg.mlflow.tracking_uri):
        mlflow.log_metrics(inspection_stages.flat(metrics))
        headline, value = inspection_stages.headline(metrics)
        lineage.describe_run(cfg, headline, value)
        for path in (cfg.paths.eval_metrics, cfg.paths.eval_details, cfg.paths.per_digit):
            mlflow.log_artifact(path, artifact_path="metrics")


def log_to_run(cfg, metrics: dict) -> None:
    """The metrics and files into the pipeline's MLflow run."""
    import mlflow  # only here: importing MLflow is a good part of a stage's start-up

    from aeflow.evaluation.metrics import LABELS, SKIPPED, SQ_ERR
    from aeflow.evaluation.scoring import MODEL
    from aeflow.tracking import lineage
    from aeflow.tracking import runs as tracking

    with tracking.resume_run(cfg.paths.run_info, cfg.mlflow.tracking_uri):
        flat = tracking.flatten({k: v for k, v in metrics.items() if k != SKIPPED})
        mlflow.log_metrics({k.replace(".", "/"): v for k, v in flat.items()})
        if SKIPPED in metrics:  # words, not a number: what the data had no labels for
            mlflow.set_tag(f"evaluate.{SKIPPED}", metrics[SKIPPED])
        lineage.describe_run(cfg, f"test {LABELS[SQ_ERR][0]}", metrics[MODEL][SQ_ERR])
        for path in (cfg.paths.eval_metrics, cfg.paths.eval_details, cfg.paths.per_digit):
            mlflow.log_artifact(path, artifact_path="metrics")


if __name__ == "__main__":
    run_stage(main)
