"""DVC stage `visualize`: figures to `paths.figures`, all logged to the MLflow run."""

from aeflow.stages.common import run_stage

MAP_POINTS = 5000  # test images on the 2-D maps: enough to see the clusters


def main() -> None:
    from pathlib import Path

    import mlflow

    from aeflow import figures, tracking
    from aeflow.checkpoints import BEST, checkpoint_path, load_weights
    from aeflow.config import instantiate_datamodule, load_params
    from aeflow.evaluation import fit_pca

    cfg = load_params()
    model = load_weights(cfg, checkpoint_path(cfg, BEST))
    dm = instantiate_datamodule(cfg)
    dm.setup("test")
    out = Path(cfg.paths.figures)
    test_images, test_labels = dm.splits["test"]
    x = test_images.unsqueeze(1).float() / 255.0  # (N, 1, H, W)
    pca = fit_pca(dm.splits["train"][0], int(cfg.model.latent_dim))
    pca2 = fit_pca(dm.splits["train"][0], 2)
    pick = figures.one_per_class(test_labels, per_class=2)
    written = [
        figures.reconstructions(x[pick], model, pca, out / figures.RECONSTRUCTIONS),
        figures.code_maps(x[:MAP_POINTS], test_labels[:MAP_POINTS], model, pca2, out / figures.CODES_2D),
        figures.loss_curve(figures.read_loss_curve(cfg.paths.loss_curve), out / figures.LOSS),
    ]
    with tracking.resume_run(cfg.paths.run_info, cfg.mlflow.tracking_uri):
        for path in written:
            mlflow.log_artifact(str(path), artifact_path="figures")
        mlflow.log_artifact(cfg.paths.loss_curve, artifact_path="metrics")


if __name__ == "__main__":
    run_stage(main)
