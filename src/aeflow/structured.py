"""Checking a config section against a typed dataclass (OmegaConf's structured configs)."""

from __future__ import annotations

import dataclasses
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from aeflow.errors import ConfigError


def check_structured(key: str, schema: type, value: Any) -> None:
    """Raise ConfigError naming `key`'s unknown key, wrong type or missing value against `schema`.

    A field whose default is `MISSING` must be set by `value`: defaults live in conf/.
    """
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), value)
    except OmegaConfBaseException as exc:
        bad = exc.full_key if getattr(exc, "full_key", None) else ""
        allowed = ", ".join(f.name for f in dataclasses.fields(schema))
        where = f"{key}.{bad}" if bad else key
        reason = str(exc).splitlines()[0]
        raise ConfigError(f"{where}: {reason} (allowed keys: {allowed})") from None
    missing = sorted(OmegaConf.missing_keys(merged))
    if missing:
        raise ConfigError(f"{key}: missing value(s) for {', '.join(missing)}; set them in conf/config.yaml")
