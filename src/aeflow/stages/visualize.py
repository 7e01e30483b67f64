"""DVC stage `visualize`: figures to `paths.figures` and the report to `paths.report_html`
(self-contained) and `paths.report_md`, all logged to the MLflow run.

Draws from the baselines stage's PCA fit, the evaluate stage's metrics and details, and the
test split; loads the plain network, not the LightningModule: nothing here imports Lightning.
"""

from aeflow.stages.common import run_stage

# The config sections this stage validates; the report also prints data.batch_size,
# optimizer, trainer.max_epochs and seed, which the train stage validated.
SECTIONS = ("seed", "paths", "mlflow", "data.source", "model.networks", "visualize")


def main() -> None:
    import json
    import logging
    from pathlib import Path

    from aeflow.config.params import load_params
    from aeflow.config.schema import MVTEC_DATA, VisualizeConfig
    from aeflow.data import packed_splits
    from aeflow.data.splits import load_split
    from aeflow.evaluation.anomaly import ANOMALY
    from aeflow.evaluation.baselines import load_pca
    from aeflow.evaluation.scoring import settings
    from aeflow.io import write_text
    from aeflow.models.weights import BEST, checkpoint_path, load_weights
    from aeflow.reporting import anomaly_figures, figures, inspection_report, report
    from aeflow.tracking.runs import read_run_info

    cfg = load_params(sections=SECTIONS)
    if cfg.data.get("_target_") == MVTEC_DATA:  # per-defect tables and maps instead
        return log_to_run(cfg, inspection_report.from_config(cfg))
    paths = cfg.paths
    packed = packed_splits.from_config(cfg)  # data=folder: the packed arrays
    images, labels = packed.split("test") if packed else load_split(paths.data, cfg.data.files, "test")
    details = json.loads(Path(paths.eval_details).read_text())
    drawn = figures.draw_all(
        load_weights(cfg, checkpoint_path(cfg, BEST)),
        load_pca(paths.baselines),
        images,
        labels,
        details,
        figures.read_loss_curve(paths.loss_curve),
        int(cfg.model.latent_dim),
        settings(cfg, "visualize", VisualizeConfig),
        Path(paths.figures),
        noun="class" if packed else "digit",
    )
    metrics = json.loads(Path(paths.eval_metrics).read_text())
    drawn += anomaly_figures.draw(
        images, details.get(ANOMALY, {}), metrics.get(ANOMALY, {}), Path(paths.figures)
    )
    train_metrics = json.loads(Path(paths.train_metrics).read_text())
    html, md = report.build(
        cfg,
        metrics,
        details,
        train_metrics,
        drawn,
        paths.report_md,
        run_id=read_run_info(paths.run_info).get("run_id"),
    )
    write_text(paths.report_html, html)
    write_text(paths.report_md, md)
    logging.getLogger(__name__).info("report: %s", Path(paths.report_html).resolve().as_uri())
    log_to_run(cfg, [fig.path for fig in drawn])


def log_to_run(cfg, figure_paths: list) -> None:
    """The figures, the loss curve and the report into the pipeline's MLflow run."""
    import mlflow  # only here: importing MLflow is a good part of a stage's start-up

    from aeflow.tracking import runs as tracking

    with tracking.resume_run(cfg.paths.run_info, cfg.mlflow.tracking_uri):
        for path in figure_paths:
            mlflow.log_artifact(str(path), artifact_path="figures")
        mlflow.log_artifact(cfg.paths.loss_curve, artifact_path="metrics")
        mlflow.log_artifact(cfg.paths.report_html, artifact_path="report")
        mlflow.log_artifact(cfg.paths.report_md, artifact_path="report")


if __name__ == "__main__":
    run_stage(main)
