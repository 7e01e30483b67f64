"""params.yaml: the composition of conf/ (what `dvc exp run` writes), loaded and validated."""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import os
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf

from aeflow.config.schema import SECTIONS, validate
from aeflow.errors import AeflowError, ConfigError
from aeflow.io import write_text

log = logging.getLogger(__name__)

PARAMS_FILE = "params.yaml"
CONF_DIR = "conf"
# params.yaml starts with these lines; the second records the overrides, so that a stage can
# tell a composition of conf/ from a stale or hand-edited file (YAML readers skip comments).
HEADER = "# The composition of conf/ (`make run` or `python -m aeflow.config`): edit conf/, not this file."
OVERRIDES_PREFIX = "# overrides: "


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


def _nearest(name: str, allowed: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(allowed), n=1)
    return f"did you mean {close[0]}? " if close else ""


def _keys_at(path: str, conf_dir: str | Path) -> list[str] | None:
    """The keys of the node at dotted `path` in the default composition (None: no such node)."""
    node: Any = to_container(compose([], conf_dir))
    for part in path.split(".") if path else []:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return sorted(node) if isinstance(node, dict) else None


def composition_error(
    exc: Exception, overrides: Iterable[str], conf_dir: str | Path = CONF_DIR
) -> ConfigError:
    """Hydra's composition error for `overrides` as one line naming the override and what is
    allowed: a group's options, or the keys beside a misspelt one with the nearest of them."""
    overrides = list(overrides)
    text = str(exc)
    if missing := re.search(r"Could not find '([^']+)/([^']+)'", text):
        group, option = missing.groups()
        options = sorted(p.stem for p in (Path(conf_dir) / group).glob("*.yaml"))
        return ConfigError(
            f"{group}={option}: no such option in {conf_dir}/{group}/; {_nearest(option, options)}"
            f"allowed: {', '.join(options)}"
        )
    if override := re.search(r"Could not override '([^']+)'", text):
        key = override.group(1)
        value = next((o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0] == key), "")
        parent, _, name = key.rpartition(".")
        keys = _keys_at(parent, conf_dir)
        if keys is not None:
            return ConfigError(
                f"{key}={value}: unknown key {name!r} in {parent or 'the config'}; {_nearest(name, keys)}"
                f"allowed: {', '.join(keys)}"
            )
    # Any other composition error (a malformed override, an append onto an existing key): Hydra's
    # own words, joined into one line.
    return ConfigError(" ".join(line.strip() for line in text.splitlines() if line.strip()))


def to_container(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain dicts and lists (a DictConfig always gives a dict)."""
    return cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True))


def params_text(cfg: DictConfig, overrides: Iterable[str] = ()) -> str:
    """params.yaml's content: the header naming `overrides`, then `cfg` as YAML."""
    return f"{HEADER}\n{OVERRIDES_PREFIX}{json.dumps(list(overrides))}\n{OmegaConf.to_yaml(cfg)}"


def recorded_overrides(path: str | Path = PARAMS_FILE) -> list[str]:
    """The overrides params_text recorded in `path` (none when another tool wrote it)."""
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.startswith("#"):
                break
            if line.startswith(OVERRIDES_PREFIX):
                return list(json.loads(line[len(OVERRIDES_PREFIX) :]))
    return []


def differences(actual: Any, expected: Any, key: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, actual value, expected value) for every leaf where two plain configs differ;
    a key missing on one side has the value `<missing>` there."""
    if isinstance(actual, dict) and isinstance(expected, dict):
        found = []
        for k in sorted(actual.keys() | expected.keys(), key=str):
            sub = f"{key}.{k}" if key else str(k)
            found += differences(actual.get(k, "<missing>"), expected.get(k, "<missing>"), sub)
        return found
    return [] if actual == expected else [(key, actual, expected)]


def composition_drift(path: str | Path = PARAMS_FILE, conf_dir: str | Path = CONF_DIR) -> str | None:
    """Why `path` is not the composition of `conf_dir` with the overrides it records, or None.

    `dvc exp run` composes params.yaml from conf/ with its `-S` overrides just before it runs
    the stages (DVC's Hydra integration; it sets DVC_EXP_NAME for them), so such a file is
    current by construction and its overrides need no record.
    """
    if os.environ.get("DVC_EXP_NAME") or not Path(conf_dir).is_dir():
        return None
    overrides = recorded_overrides(path)
    actual = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    diffs = differences(actual, to_container(compose(overrides, conf_dir)))
    if not diffs:
        return None
    shown = "; ".join(f"{k}: {a!r} in {path}, {e!r} from {conf_dir}/" for k, a, e in diffs[:10])
    more = f" (and {len(diffs) - 10} more)" if len(diffs) > 10 else ""
    with_overrides = f" with overrides {overrides}" if overrides else ""
    return (
        f"{path} is not the composition of {conf_dir}/{with_overrides}: {shown}{more}. "
        f"This run uses {path} as it is. To run the current {conf_dir}/, use `make run` "
        f"(or `python -m aeflow.config [overrides]` before `dvc repro`); for a one-off change, "
        f"`dvc exp run -S key=value`. Edit {conf_dir}/, not {path}."
    )


def _composed(overrides: list[str]) -> DictConfig:
    from hydra.errors import HydraException

    try:
        cfg = compose(overrides)
    except HydraException as exc:
        raise composition_error(exc, overrides) from None
    validate(cfg)
    return cfg


def main(argv: list[str] | None = None) -> None:
    """`python -m aeflow.config`: write or check params.yaml against conf/."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model.latent_dim=64")
    parser.add_argument(
        "--check", action="store_true", help="fail if params.yaml differs from the composition of conf/"
    )
    args = parser.parse_args(argv)
    try:
        cfg = _composed(args.overrides)
    except AeflowError as exc:
        sys.exit(f"error: {exc}")  # one line, as every stage answers: no traceback of the composer
    if args.check:
        if OmegaConf.load(PARAMS_FILE) != cfg:
            raise SystemExit(f"{PARAMS_FILE} is stale: run `python -m aeflow.config` to rewrite it")
        return
    write_text(PARAMS_FILE, params_text(cfg, args.overrides))


if __name__ == "__main__":
    main()
