"""DVC stage `visualize`: figures to `paths.figures` and the report to `paths.report_html`
(self-contained) and `paths.report_md`, all logged to the MLflow run."""

from aeflow.stages.common import run_stage


def main() -> None:
    import json
    import logging
    from pathlib import Path

    import mlflow

    from aeflow.config.instantiate import instantiate_datamodule
    from aeflow.config.params import load_params
    from aeflow.config.schema import VisualizeConfig
    from aeflow.evaluation.evaluate import NAMES, fit_pca, settings, to_float
    from aeflow.evaluation.metrics import LABELS, SQ_ERR
    from aeflow.io import write_text
    from aeflow.models.weights import BEST, checkpoint_path, load_weights
    from aeflow.reporting import figures, report
    from aeflow.tracking import runs as tracking

    cfg = load_params()
    knobs = settings(cfg, "visualize", VisualizeConfig)
    model = load_weights(cfg, checkpoint_path(cfg, BEST))
    dm = instantiate_datamodule(cfg)
    dm.setup("test")
    out = Path(cfg.paths.figures)
    test_images, test_labels = (t.cpu() for t in dm.splits["test"])
    x = to_float(test_images)  # (N, 1, H, W)
    pca = fit_pca(dm.splits["train"][0].cpu(), max(int(cfg.model.latent_dim), 2))
    metrics = json.loads(Path(cfg.paths.eval_metrics).read_text())
    details = json.loads(Path(cfg.paths.eval_details).read_text())
    train_metrics = json.loads(Path(cfg.paths.train_metrics).read_text())
    pick = figures.one_per_class(test_labels, per_class=2)
    n_map = knobs.map_points
    drawn = [
        (
            figures.reconstructions(
                x[pick], model, pca.first(int(cfg.model.latent_dim)), out / figures.RECONSTRUCTIONS
            ),
            "Test images (top), their autoencoder reconstructions and PCA reconstructions with the same "
            "code size.",
        ),
        (
            figures.worst_reconstructed(x, model, details["worst"], out / figures.WORST),
            "The worst-reconstructed test images: original above reconstruction; title: test index, digit "
            "and squared error.",
        ),
        (
            figures.code_maps(x[:n_map], test_labels[:n_map], model, pca.first(2), out / figures.CODES_2D),
            f"Codes of {min(n_map, len(x))} test images coloured by digit: the autoencoder (projection in "
            "the panel title) beside PCA of the pixels.",
        ),
        (
            figures.interpolation(
                x,
                test_labels,
                model,
                figures.interpolation_pairs(test_labels, knobs.interpolation_pairs),
                knobs.interpolation_steps,
                out / figures.INTERPOLATION,
            ),
            "A walk through code space: decoded images along the straight line between the codes of two "
            "test images of different digits (fraction of the way on top).",
        ),
        (
            figures.per_digit_bars(
                details["by_digit"], SQ_ERR, out / figures.PER_DIGIT, NAMES, LABELS[SQ_ERR][0]
            ),
            "Squared error per test image, by digit: autoencoder beside PCA.",
        ),
        (
            figures.loss_curve(figures.read_loss_curve(cfg.paths.loss_curve), out / figures.LOSS),
            "Learning curves: training and validation loss per epoch.",
        ),
    ]
    info = tracking.read_run_info(cfg.paths.run_info)
    html, md = report.build(
        cfg,
        metrics,
        details,
        train_metrics,
        [report.Figure(path, caption) for path, caption in drawn],
        cfg.paths.report_md,
        run_id=info.get("run_id"),
    )
    write_text(cfg.paths.report_html, html)
    write_text(cfg.paths.report_md, md)
    logging.getLogger(__name__).info("report: %s", Path(cfg.paths.report_html).resolve().as_uri())
    with tracking.resume_run(cfg.paths.run_info, cfg.mlflow.tracking_uri):
        for path, _ in drawn:
            mlflow.log_artifact(str(path), artifact_path="figures")
        mlflow.log_artifact(cfg.paths.loss_curve, artifact_path="metrics")
        mlflow.log_artifact(cfg.paths.report_html, artifact_path="report")
        mlflow.log_artifact(cfg.paths.report_md, artifact_path="report")


if __name__ == "__main__":
    run_stage(main)
