"""DVC stage `baselines`: what every model is compared with, from the data alone, in
`paths.baselines`: PCA fitted on the training split, PCA's and the raw pixels' test metrics and
probes, PCA's anomaly score of every image the anomaly protocols score
(aeflow.evaluation.baselines). It reads no model, so DVC keeps its output across experiments.
"""

from aeflow.stages.common import run_stage

# The config sections this stage reads, validated before any work.
SECTIONS = ("seed", "paths", "data.source", "model.networks", "evaluate")


def main() -> None:
    from aeflow.config.params import load_params
    from aeflow.data.schema import MVTEC_DATA
    from aeflow.data.splits import splits_from_config
    from aeflow.evaluation import baselines, inspection_stages

    cfg = load_params(sections=SECTIONS)
    if cfg.data.get("_target_") == MVTEC_DATA:  # the PCA-residual baseline of the anomaly maps
        return inspection_stages.write_baseline(cfg)
    baselines.from_config(cfg, splits_from_config(cfg)).write(cfg.paths.baselines)


if __name__ == "__main__":
    run_stage(main)
