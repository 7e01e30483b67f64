"""A search file (`conf/search/*.yaml`): the space, objective, budget and pruner of one Optuna study.

The space maps any config key to a sweep in Hydra's override grammar, the one
`dvc exp run -S` and Hydra's own sweepers take, parsed by Hydra's parser:

    optimizer.lr: tag(log, interval(1e-4, 1e-2))   # float, sampled on a log scale
    scheduler.lr_scheduler.pct_start: interval(0.1, 0.5)
    model.latent_dim: tag(int, interval(8, 64))    # integers
    data.batch_size: range(64, 257, 64)            # 64, 128, 192, 256 (the stop is excluded)
    model.encoder.norm: choice(none, batch, layer)
    optimizer: choice(adam, adamw)                 # a config group's option

Everything is checked before any training (`SearchSpec.check`): the keys
exist, every range is non-empty, the objective is a validation metric, and the
config composes and validates at every end of every range.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml
from omegaconf import DictConfig, OmegaConf

from aeflow.config.params import CONF_DIR, compose
from aeflow.config.schema import validate
from aeflow.errors import ConfigError

# Metrics logged on the validation split every epoch, and the direction that is better.
VALIDATION_METRICS = {"val/loss": "minimize"}
# Keys a trial sets itself: the budget, where it writes, how it is tracked.
MANAGED_KEYS = ("trainer.max_epochs", "paths", "mlflow")
# Keys that change what the objective measures, so trials would not be comparable.
INCOMPARABLE = {"val/loss": ("model.loss",)}
FILE_KEYS = ("study", "base", "objective", "n_trials", "budget", "pruner", "sampler", "space")
PRUNERS: dict[str, type[optuna.pruners.BasePruner]] = {
    "median": optuna.pruners.MedianPruner,
    "percentile": optuna.pruners.PercentilePruner,
    "hyperband": optuna.pruners.HyperbandPruner,
    "none": optuna.pruners.NopPruner,
}
SWEEP_FORMS = (
    "choice(a, b, ...)",
    "range(start, stop[, step])",
    "interval(low, high)",
    "tag(log, interval(low, high))",
    "tag(int, interval(low, high))",
)
INTERVAL_TAGS = ("log", "int")
# The range syntax search files had before they took Hydra's grammar.
_OLD_RANGE = re.compile(
    r"^(?P<kind>uniform|log-uniform|int)\s+(?P<low>\S+?)\s*\.\.\s*(?P<high>\S+?)(\s+step\s+(?P<step>\S+))?$"
)


class SearchSpaceError(ConfigError):
    """The search file is invalid: unknown key, empty range, a metric that is not a validation metric."""


@dataclass(frozen=True)
class Dimension:
    """One config key and its range; `candidates` are the values the checks compose."""

    key: str
    kind: str  # choice | int | float
    source: str = ""  # as written in the search file
    low: float | int | None = None
    high: float | int | None = None
    step: int | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()  # Optuna's values (lists are kept as their override text)
    texts: tuple[str, ...] = ()  # each choice as override text

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.kind == "choice":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(
                self.key, int(self.low), int(self.high), step=self.step or 1, log=self.log
            )
        return trial.suggest_float(self.key, self.low, self.high, log=self.log)

    def override(self, value: Any) -> str:
        """`key=value` in Hydra's override syntax."""
        if self.kind == "choice":
            return f"{self.key}={self.texts[self.choices.index(value)]}"
        return f"{self.key}={value!r}"

    def candidates(self) -> list[Any]:
        return list(self.choices) if self.kind == "choice" else [self.low, self.high]


def _new_form(old: str) -> str | None:
    """The Hydra sweep that says what a range in the old syntax said, or None if `old` is not one."""
    if old.startswith("choice ") and "(" not in old:
        return f"choice({old[len('choice ') :].strip()})"
    match = _OLD_RANGE.match(old)
    if not match:
        return None
    low, high, step = match["low"], match["high"], match["step"]
    if match["kind"] == "uniform":
        return f"interval({low}, {high})"
    if match["kind"] == "log-uniform":
        return f"tag(log, interval({low}, {high}))"
    return f"range({low}, {int(high) + 1}, {step})" if step else f"tag(int, interval({low}, {high}))"


def _choice_value(text: str) -> Any:
    """The value Optuna records for a choice written as `text`: a number, bool or string; a list
    stays as its text."""
    value = yaml.safe_load(text)
    return value if isinstance(value, (bool, int, float, str)) else text


def parse_dimension(key: str, spec: Any) -> Dimension:
    """`spec`, a sweep in Hydra's grammar (SWEEP_FORMS), as a Dimension of `key`."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
    from hydra.errors import HydraException

    text = str(spec).strip()
    new = _new_form(text) if isinstance(spec, str) else None
    if new:
        raise SearchSpaceError(
            f"space.{key}: {text!r} is the old range syntax; write it in Hydra's sweep grammar: {new}"
        )
    try:
        override = OverridesParser.create().parse_override(f"{key}={text}")
    except HydraException as exc:
        reason = str(exc).splitlines()[0]
        raise SearchSpaceError(
            f"space.{key}: cannot read {text!r} ({reason}); write one of: {'; '.join(SWEEP_FORMS)}"
        ) from None
    value = override.value()
    if isinstance(value, ChoiceSweep):
        texts = tuple(override.sweep_string_iterator())
        choices = tuple(_choice_value(t) for t in texts)
        if len(set(map(repr, choices))) != len(choices):
            raise SearchSpaceError(f"space.{key}: {text!r} lists a value twice")
        return Dimension(key, "choice", text, choices=choices, texts=texts)
    if isinstance(value, RangeSweep):
        values = [int(v) for v in override.sweep_string_iterator()]
        numbers = (value.start, value.stop, value.step)
        if any(not float(v).is_integer() for v in numbers):
            raise SearchSpaceError(
                f"space.{key}: {text!r}: range() takes integers; for floats write interval(low, high)"
            )
        if not values or len(values) == 1:
            raise SearchSpaceError(f"space.{key}: empty range {text!r}: it holds {values}")
        return Dimension(key, "int", text, low=values[0], high=values[-1], step=int(value.step))
    if isinstance(value, IntervalSweep):
        return _interval(key, text, value)
    raise SearchSpaceError(
        f"space.{key}: {text!r} is one value, not a range; write one of: {'; '.join(SWEEP_FORMS)}"
    )


def _interval(key: str, text: str, value: Any) -> Dimension:
    unknown = sorted(set(value.tags) - set(INTERVAL_TAGS))
    if unknown:
        raise SearchSpaceError(
            f"space.{key}: {text!r}: unknown tag(s) {unknown}; allowed: {', '.join(INTERVAL_TAGS)}"
        )
    low, high, log = value.start, value.end, "log" in value.tags
    kind = "int" if "int" in value.tags else "float"
    if kind == "int":
        if not (float(low).is_integer() and float(high).is_integer()):
            raise SearchSpaceError(f"space.{key}: {text!r}: an int interval needs integer bounds")
        low, high = int(low), int(high)
    if not low < high:
        raise SearchSpaceError(f"space.{key}: empty range {text!r}: the lower bound must be below the upper")
    if log and low <= 0:
        raise SearchSpaceError(f"space.{key}: {text!r}: a log interval must be above 0")
    return Dimension(key, kind, text, low=low, high=high, log=log)


@dataclass(frozen=True)
class SearchSpec:
    """A parsed search file."""

    path: Path
    study: str
    base: tuple[str, ...]
    metric: str
    direction: str
    n_trials: int
    epochs: int
    dimensions: tuple[Dimension, ...]
    pruner: Mapping[str, Any] = field(default_factory=lambda: {"type": "median"})
    sampler: Mapping[str, Any] = field(default_factory=dict)

    @property
    def preset_name(self) -> str:
        """The experiment preset the best trial is written as: `conf/experiment/<study>_best.yaml`."""
        return f"{self.study}_best"

    def overrides(self, params: Mapping[str, Any]) -> list[str]:
        """Hydra overrides of one trial: base, budget, then the sampled values."""
        sampled = [d.override(params[d.key]) for d in self.dimensions]
        return [*self.base, f"trainer.max_epochs={self.epochs}", *sampled]

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        return {d.key: d.suggest(trial) for d in self.dimensions}

    def fingerprint(self) -> str:
        """What makes two runs of a study comparable: the space, objective, base and budget."""
        space = {d.key: [d.kind, d.low, d.high, d.step, d.log, list(d.texts)] for d in self.dimensions}
        return json.dumps(
            {
                "base": list(self.base),
                "metric": self.metric,
                "direction": self.direction,
                "epochs": self.epochs,
                "space": space,
            },
            sort_keys=True,
        )

    def make_pruner(self) -> optuna.pruners.BasePruner:
        settings = dict(self.pruner)
        kind = settings.pop("type", "median")
        if kind not in PRUNERS:
            raise SearchSpaceError(f"pruner.type={kind!r}: allowed: {', '.join(PRUNERS)}")
        if kind == "hyperband":  # a trial's resource is its epochs
            settings.setdefault("max_resource", self.epochs)
        return _build(PRUNERS[kind], settings, f"pruner ({kind})")

    def make_sampler(self, seed: int | None = None) -> optuna.samplers.BaseSampler:
        settings = dict(self.sampler)
        if seed is not None:
            settings["seed"] = seed
        return _build(optuna.samplers.TPESampler, settings, "sampler (TPE)")

    def check(self, conf_dir: str | Path = CONF_DIR) -> DictConfig:
        """Fail before any training if a key, range or value cannot be trained; return the base config."""
        self.make_pruner()
        self.make_sampler()
        base = _compose_checked(
            list(self.base) + [f"trainer.max_epochs={self.epochs}"], conf_dir, f"base {list(self.base)}"
        )
        groups = {p.name for p in Path(conf_dir).iterdir() if p.is_dir()}
        for dim in self.dimensions:
            if dim.key.split(".")[0] in MANAGED_KEYS or dim.key in MANAGED_KEYS:
                raise SearchSpaceError(
                    f"space.{dim.key}: set by the search itself (budget, output "
                    f"folders, tracking); not searchable: {', '.join(MANAGED_KEYS)}"
                )
            if dim.key in INCOMPARABLE.get(self.metric, ()):
                raise SearchSpaceError(
                    f"space.{dim.key}: changes what {self.metric} measures, so trials "
                    "could not be compared; fix it in `base` instead"
                )
            if dim.key not in groups and OmegaConf.select(base, dim.key, default=_ABSENT) is _ABSENT:
                raise SearchSpaceError(f"space.{dim.key}: unknown config key{_did_you_mean(dim.key, base)}")
        # Every end of every range, each in one composition (n compositions for the longest choice).
        widest = max((len(d.candidates()) for d in self.dimensions), default=0)
        for i in range(widest):
            params = {d.key: d.candidates()[i % len(d.candidates())] for d in self.dimensions}
            sampled = [d.override(params[d.key]) for d in self.dimensions]
            _compose_checked(self.overrides(params), conf_dir, " ".join(sampled))
        return base


_ABSENT = object()


def _did_you_mean(key: str, cfg: DictConfig) -> str:
    keys = list(_leaf_keys(OmegaConf.to_container(cfg, resolve=False)))
    close = difflib.get_close_matches(key, keys, n=3)
    return f"; did you mean {', '.join(close)}?" if close else ""


def _leaf_keys(tree: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(tree, dict):
        for name, value in tree.items():
            yield from _leaf_keys(value, f"{prefix}{name}.")
    else:
        yield prefix.rstrip(".")


def _compose_checked(overrides: list[str], conf_dir: str | Path, what: str) -> DictConfig:
    from hydra.errors import HydraException

    try:
        cfg = compose(overrides, conf_dir=conf_dir)
    except HydraException as exc:
        raise SearchSpaceError(f"{what}: the config does not compose: {str(exc).splitlines()[0]}") from None
    try:
        validate(cfg)
    except ConfigError as exc:
        raise SearchSpaceError(f"{what}: invalid config: {exc}") from None
    return cfg


def _build(cls: type, settings: dict[str, Any], where: str) -> Any:
    accepted = set(inspect.signature(cls).parameters)
    unknown = sorted(set(settings) - accepted)
    if unknown:
        raise SearchSpaceError(
            f"{where}: unknown setting(s) {unknown}; allowed: {', '.join(sorted(accepted))}"
        )
    try:
        return cls(**settings)
    except (TypeError, ValueError) as exc:
        raise SearchSpaceError(f"{where}: {exc}") from None


def check_objective(metric: Any, direction: Any) -> tuple[str, str]:
    if not isinstance(metric, str) or not metric:
        raise SearchSpaceError(
            f"objective.metric={metric!r}: name a validation metric, one of: {', '.join(VALIDATION_METRICS)}"
        )
    if metric.startswith(("test", "pca")):
        raise SearchSpaceError(
            f"objective.metric={metric!r}: a test-set metric; the test set is kept for "
            "the final evaluation of the chosen preset. Search on a validation metric: "
            f"{', '.join(VALIDATION_METRICS)}"
        )
    if metric not in VALIDATION_METRICS:
        raise SearchSpaceError(
            f"objective.metric={metric!r}: not a metric training logs on the validation "
            f"split; allowed: {', '.join(VALIDATION_METRICS)}"
        )
    better = VALIDATION_METRICS[metric]
    direction = better if direction is None else direction
    if direction != better:
        raise SearchSpaceError(
            f"objective.direction={direction!r}: {metric} is better when lower; allowed: {better}"
        )
    return metric, direction


def load_spec(path: str | Path) -> SearchSpec:
    """Parse and check the search file's own structure (the config is checked by `SearchSpec.check`)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise SearchSpaceError(f"cannot read the search file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise SearchSpaceError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise SearchSpaceError(f"{path}: expected a mapping with keys {', '.join(FILE_KEYS)}")
    unknown = sorted(set(raw) - set(FILE_KEYS))
    if unknown:
        raise SearchSpaceError(f"{path}: unknown key(s) {unknown}; allowed: {', '.join(FILE_KEYS)}")
    space = raw.get("space")
    if not isinstance(space, dict) or not space:
        raise SearchSpaceError(f"{path}: `space` must map config keys to sweeps ({'; '.join(SWEEP_FORMS)})")
    base = raw.get("base") or []
    if isinstance(base, str) or not all(isinstance(o, str) and "=" in o for o in base):
        raise SearchSpaceError(f"{path}: `base` must be a list of Hydra overrides (key=value), got {base!r}")
    objective = raw.get("objective") or {}
    if not isinstance(objective, dict) or set(objective) - {"metric", "direction"}:
        raise SearchSpaceError(f"{path}: `objective` takes `metric` and `direction`, got {objective!r}")
    metric, direction = check_objective(objective.get("metric"), objective.get("direction"))
    budget = raw.get("budget") or {}
    if not isinstance(budget, dict) or set(budget) != {"epochs"}:
        raise SearchSpaceError(f"{path}: `budget` must be {{epochs: N}} (epochs per trial), got {budget!r}")
    for name, value in (("budget.epochs", budget["epochs"]), ("n_trials", raw.get("n_trials"))):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SearchSpaceError(f"{path}: {name}={value!r}: must be a positive integer")
    for name in ("pruner", "sampler"):
        if not isinstance(raw.get(name) or {}, dict):
            raise SearchSpaceError(f"{path}: `{name}` must be a mapping of settings, got {raw[name]!r}")
    study = check_study_name(str(raw.get("study") or path.stem), f"{path}: study")
    return SearchSpec(
        path=path,
        study=study,
        base=tuple(base),
        metric=metric,
        direction=direction,
        n_trials=raw["n_trials"],
        epochs=budget["epochs"],
        dimensions=tuple(parse_dimension(str(k), v) for k, v in space.items()),
        pruner=raw.get("pruner") or {"type": "median"},
        sampler=raw.get("sampler") or {},
    )


def check_study_name(name: str, where: str) -> str:
    """A study name is part of file names (its journal, its preset): no folders, no spaces."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise SearchSpaceError(f"{where}={name!r}: use letters, digits, '_', '-', '.'")
    return name


def with_overrides(spec: SearchSpec, **changes: Any) -> SearchSpec:
    """The spec with command-line settings (study name, number of trials) replacing the file's."""
    changes = {k: v for k, v in changes.items() if v is not None}
    if "study" in changes:
        check_study_name(changes["study"], "--study")
    if "n_trials" in changes and changes["n_trials"] < 1:
        raise SearchSpaceError(f"--n-trials={changes['n_trials']}: must be a positive integer")
    return dataclasses.replace(spec, **changes)
