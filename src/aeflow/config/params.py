"""params.yaml: the composition of conf/ (what `dvc exp run` writes), loaded and validated."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf

from aeflow.config.schema import SECTIONS, validate
from aeflow.io import write_text

log = logging.getLogger(__name__)

PARAMS_FILE = "params.yaml"
CONF_DIR = "conf"


def load_params(path: str | Path = PARAMS_FILE, sections: Iterable[str] = SECTIONS) -> DictConfig:
    """Load and validate `params.yaml`; only `sections` are checked (a stage reads only those)."""
    cfg = OmegaConf.load(path)
    if not isinstance(cfg, DictConfig):
        raise TypeError(f"{path}: expected a mapping at the top level")
    validate(cfg, sections)
    return cfg


def compose(overrides: Iterable[str] = (), conf_dir: str | Path = CONF_DIR) -> DictConfig:
    """Compose conf/ exactly as DVC's Hydra integration does for `dvc exp run -S ...`."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(Path(conf_dir).resolve()), version_base=None):
        cfg = hydra_compose(config_name="config", overrides=list(overrides))
    OmegaConf.resolve(cfg)
    return cfg


def to_container(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain dicts and lists (a DictConfig always gives a dict)."""
    return cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True))


def main(argv: list[str] | None = None) -> None:
    """`python -m aeflow.config`: write or check params.yaml against conf/."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model.latent_dim=64")
    parser.add_argument(
        "--check", action="store_true", help="fail if params.yaml differs from the composition of conf/"
    )
    args = parser.parse_args(argv)
    cfg = compose(args.overrides)
    validate(cfg)
    text = OmegaConf.to_yaml(cfg)
    if args.check:
        if OmegaConf.load(PARAMS_FILE) != cfg:
            raise SystemExit(f"{PARAMS_FILE} is stale: run `python -m aeflow.config` to rewrite it")
        return
    write_text(PARAMS_FILE, text)


if __name__ == "__main__":
    main()
