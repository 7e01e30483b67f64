"""Validation of the composed config, before any work starts.

Two layers:
- fixed sections (seed, paths, mlflow, performance, callbacks, evaluate,
  visualize, the data files and sources) are typed dataclasses merged with
  OmegaConf, which rejects unknown keys and wrong types; their values live in
  conf/ only (`MISSING` here), so a key conf/ lacks is an error, not a silent default;
- every `_target_` node is checked against an allow-list of classes and the
  class's own signature: unknown keys are refused, and a value must have the
  type of the parameter's default (as nanoGPT's configurator does).
Then each section's impossible values (lr <= 0, latent_dim = 0, ...). One check
per section (`CHECKS`); every error names the key, the bad value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from aeflow.data.schema import (
    DATAMODULES,
    FOLDER_DATA,
    MVTEC_DATA,
    PACKED_DATA,
    check_files_and_source,
    is_packed,
)
from aeflow.errors import ConfigError
from aeflow.models.choices import ACTIVATIONS, LOSSES, NORMS, SCHEDULER_INTERVALS, noise_problem
from aeflow.models.shapes import check_conv_size, height_width
from aeflow.numerics.modes import MODES as NUMERICS_MODES
from aeflow.structured import check_structured

__all__ = ["FOLDER_DATA", "MVTEC_DATA", "PACKED_DATA", "SECTIONS", "validate"]


@dataclass
class PathsConfig:
    data: str = MISSING
    data_source: str = MISSING
    checkpoints: str = MISSING
    run_info: str = MISSING
    train_metrics: str = MISSING
    eval_metrics: str = MISSING
    loss_curve: str = MISSING
    figures: str = MISSING
    eval_details: str = MISSING
    per_digit: str = MISSING
    report_html: str = MISSING
    report_md: str = MISSING
    resume: str = MISSING
    ood: str = MISSING
    baselines: str = MISSING
    package: str = MISSING


@dataclass
class MlflowConfig:
    experiment_name: str = MISSING
    tracking_uri: str | None = MISSING
    log_model: bool = MISSING
    register_model: str | None = MISSING


# torch.set_float32_matmul_precision's values ("highest": exact float32; the others allow TF32/bf16).
MATMUL_PRECISIONS = ("highest", "high", "medium")


@dataclass
class PerformanceConfig:
    """Speed switches (aeflow.training.performance); none changes results on the CPU."""

    float32_matmul_precision: str = MISSING
    compile: bool = MISSING
    progress_bar_refresh_rate: int = MISSING
    num_threads: int | None = MISSING
    numerics: str = MISSING  # native | portable (aeflow.numerics.modes)


@dataclass
class InspectionSettings:
    """Anomaly maps and their metrics for data=mvtec (aeflow.evaluation.inspection.InspectionConfig
    checks the values: map kinds, an odd SSIM window, ...); conf/config.yaml says what each does."""

    maps: list[str] = MISSING
    ssim_window: int = MISSING
    smoothing_sigma: float = MISSING
    image_score: str = MISSING
    top_k: float = MISSING
    n_bins: int = MISSING
    pca_components: int = MISSING
    pca_fit_images: int = MISSING
    batch_size: int = MISSING


@dataclass
class EvaluateConfig:
    """Knobs of the evaluate stage (aeflow.evaluation.evaluate); conf/config.yaml says what each does."""

    probe_train_size: int = MISSING
    knn_k: int = MISSING
    logreg_max_iter: int = MISSING
    worst_n: int = MISSING
    # Anomaly detection (aeflow.evaluation.anomaly): names are checked where they are used.
    threshold_quantile: float = MISSING
    score: str = MISSING
    corruptions: list[str] | None = MISSING
    ood: list[str] = MISSING
    ood_mirrors: dict[str, list[str]] | None = MISSING
    inspection: InspectionSettings = field(default_factory=InspectionSettings)


@dataclass
class VisualizeConfig:
    """Knobs of the visualize stage (aeflow.reporting.figures, aeflow.reporting.report)."""

    map_points: int = MISSING
    interpolation_pairs: int = MISSING
    interpolation_steps: int = MISSING


@dataclass
class EarlyStoppingConfig:
    enabled: bool = MISSING
    patience: int = MISSING
    min_delta: float = MISSING


@dataclass
class CallbacksConfig:
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)


# The classes a `_target_` may name, per config node. Extending the project
# with a new network or optimizer means adding it here.
ALLOWED_TARGETS: dict[str, tuple[str, ...]] = {
    "data": DATAMODULES,
    "model": ("aeflow.models.autoencoder.Autoencoder", "aeflow.models.autoencoder.DenoisingAutoencoder"),
    "model.encoder": ("aeflow.models.components.MLPEncoder", "aeflow.models.components.ConvEncoder"),
    "model.decoder": ("aeflow.models.components.MLPDecoder", "aeflow.models.components.ConvDecoder"),
    "scheduler.lr_scheduler": (
        "torch.optim.lr_scheduler.OneCycleLR",
        "torch.optim.lr_scheduler.CosineAnnealingLR",
    ),
    "optimizer": ("torch.optim.RMSprop", "torch.optim.Adam", "torch.optim.AdamW", "torch.optim.SGD"),
    "trainer": ("pytorch_lightning.Trainer",),
}
# Arguments the stages pass at instantiation time, never from config.
INJECTED: dict[str, set[str]] = {
    "data": {"data_dir", "seed"},
    "model": {"optimizer", "scheduler", "scheduler_interval"},
    # The schedule's length is filled in by the model from the trainer.
    "scheduler.lr_scheduler": {"optimizer", "total_steps", "T_max", "epochs", "steps_per_epoch"},
    "optimizer": {"params"},
    "trainer": {"callbacks", "logger", "default_root_dir", "enable_checkpointing"},
}
# Non-argument keys a node may carry: `source` is read by the download stage.
EXTRA_KEYS: dict[str, set[str]] = {"data": {"source"}}
SCHEDULER_KEYS = ("interval", "lr_scheduler")


# --- one check per section ------------------------------------------------------------------


def _check_seed(cfg: DictConfig, sections: set[str]) -> None:
    if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int):
        raise ConfigError(f"seed={cfg.seed!r}: must be an integer")


def _structured(key: str, schema: type) -> Callable[[DictConfig, set[str]], None]:
    """The check of a section that is exactly a dataclass."""

    def check(cfg: DictConfig, sections: set[str]) -> None:
        check_structured(key, schema, cfg[key])

    return check


def _check_performance(cfg: DictConfig, sections: set[str]) -> None:
    check_structured("performance", PerformanceConfig, cfg.performance)
    perf = cfg.performance
    if perf.float32_matmul_precision not in MATMUL_PRECISIONS:
        raise ConfigError(
            f"performance.float32_matmul_precision={perf.float32_matmul_precision!r}: "
            f"allowed: {', '.join(MATMUL_PRECISIONS)}"
        )
    if perf.numerics not in NUMERICS_MODES:
        raise ConfigError(f"performance.numerics={perf.numerics!r}: allowed: {', '.join(NUMERICS_MODES)}")
    if perf.num_threads is not None and perf.num_threads < 1:
        raise ConfigError(f"performance.num_threads={perf.num_threads}: must be >= 1 (or null: one per core)")
    if perf.progress_bar_refresh_rate < 1:
        raise ConfigError(
            f"performance.progress_bar_refresh_rate={perf.progress_bar_refresh_rate}: must be >= 1"
        )


def _knobs(key: str, schema: type) -> Callable[[DictConfig, set[str]], None]:
    """The check of a stage's knobs: the dataclass, every integer positive, a quantile in (0, 1)."""

    def check(cfg: DictConfig, sections: set[str]) -> None:
        check_structured(key, schema, cfg[key])
        for f in dataclasses.fields(schema):
            if f.type == "int":
                _positive(cfg, f"{key}.{f.name}")
        quantile = cfg[key].get("threshold_quantile", 0.5)
        if not 0 < quantile < 1:
            raise ConfigError(f"{key}.threshold_quantile={quantile}: must be in (0, 1), e.g. 0.99")

    return check


def _check_data_source(cfg: DictConfig, sections: set[str]) -> None:
    """The data's files and sources, without importing the DataModule (and so Lightning)."""
    if is_packed(cfg.data):
        _check_folder(cfg, sections)
    else:
        check_files_and_source(cfg.data)


def _check_data(cfg: DictConfig, sections: set[str]) -> None:
    _check_target_node("data", cfg.data)
    _positive(cfg, "data.batch_size")
    if not is_packed(cfg.data):  # a folder's val_size is a fraction (_check_folder)
        _positive(cfg, "data.val_size")


def _check_networks(cfg: DictConfig, sections: set[str]) -> None:
    """The encoder and decoder, without importing the LightningModule (and so Lightning)."""
    for key in ("model.encoder", "model.decoder"):
        _check_target_node(key, OmegaConf.select(cfg, key))
    _positive(cfg, "model.latent_dim")
    for part in ("encoder", "decoder"):
        node = cfg.model.get(part) or {}
        for key in ("activation", "code_activation"):
            if key in node and node[key] not in ACTIVATIONS:
                raise ConfigError(f"model.{part}.{key}={node[key]!r}: allowed: {', '.join(ACTIVATIONS)}")
        if "norm" in node and node.norm not in NORMS:
            raise ConfigError(f"model.{part}.norm={node.norm!r}: allowed: {', '.join(NORMS)}")
    _check_image_shapes(cfg)


def _check_model(cfg: DictConfig, sections: set[str]) -> None:
    """The LightningModule's own settings (its networks are `model.networks`)."""
    _check_target_node("model", cfg.model)
    if cfg.model.get("loss") not in LOSSES:
        raise ConfigError(f"model.loss={cfg.model.get('loss')!r}: allowed: {', '.join(LOSSES)}")
    if "noise" in cfg.model or "noise_level" in cfg.model:
        problem = noise_problem(cfg.model.get("noise", "gaussian"), cfg.model.get("noise_level", 0.0))
        if problem:
            raise ConfigError(f"model.{problem}")


def _check_optimizer(cfg: DictConfig, sections: set[str]) -> None:
    _check_target_node("optimizer", cfg.optimizer)
    _positive(cfg, "optimizer.lr", float)
    for key in ("weight_decay", "momentum"):
        if cfg.optimizer.get(key, 0) < 0:
            raise ConfigError(f"optimizer.{key}={cfg.optimizer[key]}: must be >= 0")


def _check_trainer(cfg: DictConfig, sections: set[str]) -> None:
    _check_target_node("trainer", cfg.trainer)
    _positive(cfg, "trainer.max_epochs")
    clip = cfg.trainer.get("gradient_clip_val")
    if clip is not None and (isinstance(clip, bool) or clip < 0):
        raise ConfigError(f"trainer.gradient_clip_val={clip!r}: must be >= 0 or null")


def _check_scheduler(cfg: DictConfig, sections: set[str]) -> None:
    """`scheduler: {interval: step|epoch, lr_scheduler: null | <allowed _target_>}`."""
    node = cfg.get("scheduler")
    if node is None:
        return
    if not isinstance(node, DictConfig) or set(node) - set(SCHEDULER_KEYS):
        extra = sorted(set(node) - set(SCHEDULER_KEYS)) if isinstance(node, DictConfig) else node
        raise ConfigError(f"scheduler: unknown key(s) {extra}; allowed: {', '.join(SCHEDULER_KEYS)}")
    interval = node.get("interval", "step")
    if interval not in SCHEDULER_INTERVALS:
        raise ConfigError(f"scheduler.interval={interval!r}: allowed: {', '.join(SCHEDULER_INTERVALS)}")
    sched = node.get("lr_scheduler")
    if sched is None:
        return
    _check_target_node("scheduler.lr_scheduler", sched)
    if "OneCycleLR" in sched._target_ and interval != "step":
        raise ConfigError("scheduler.interval=epoch: OneCycleLR must step per batch; allowed: step")
    if "max_lr" in sched:
        _positive(cfg, "scheduler.lr_scheduler.max_lr", float)
    pct = sched.get("pct_start", 0.3)
    if not 0 < pct < 1:
        raise ConfigError(f"scheduler.lr_scheduler.pct_start={pct}: must be in (0, 1)")


def _check_callbacks(cfg: DictConfig, sections: set[str]) -> None:
    check_structured("callbacks", CallbacksConfig, cfg.callbacks)
    stop = cfg.callbacks.early_stopping
    if stop.patience < 1:
        raise ConfigError(f"callbacks.early_stopping.patience={stop.patience}: must be >= 1")
    if stop.min_delta < 0:
        raise ConfigError(f"callbacks.early_stopping.min_delta={stop.min_delta}: must be >= 0")


# What `validate` can check, in order. "data.source" (the data's files and sources) and
# "model.networks" (the encoder and decoder) are parts of "data" and "model" that stages
# which do not train check alone, without importing Lightning.
CHECKS: dict[str, Callable[[DictConfig, set[str]], None]] = {
    "seed": _check_seed,
    "paths": _structured("paths", PathsConfig),
    "mlflow": _structured("mlflow", MlflowConfig),
    "performance": _check_performance,
    "evaluate": _knobs("evaluate", EvaluateConfig),
    "visualize": _knobs("visualize", VisualizeConfig),
    "data.source": _check_data_source,
    "data": _check_data,
    # The model's own keys first: a bad `model.latent_dim` is named as the user set it, not as the
    # network key that interpolates it.
    "model": _check_model,
    "model.networks": _check_networks,
    "optimizer": _check_optimizer,
    "trainer": _check_trainer,
    "scheduler": _check_scheduler,
    "callbacks": _check_callbacks,
}
PARTS = {"data": "data.source", "model": "model.networks"}  # checking a section checks its part
SECTIONS = tuple(dict.fromkeys(name.split(".")[0] for name in CHECKS))
OPTIONAL_SECTIONS = {"scheduler"}  # no section: no learning-rate schedule


def validate(cfg: DictConfig, sections: Iterable[str] = SECTIONS) -> None:
    """Raise ConfigError naming the first bad key, value and what is allowed.

    `sections`: the names in `CHECKS` to check (a stage checks only what it reads).
    """
    sections = set(sections)
    unknown_checks = sorted(sections - set(CHECKS))
    if unknown_checks:
        raise ValueError(f"no such config check(s) {unknown_checks}; allowed: {', '.join(CHECKS)}")
    sections |= {PARTS[s] for s in sections if s in PARTS}
    unknown = set(cfg.keys()) - set(SECTIONS)
    if unknown:
        raise ConfigError(f"unknown top-level key(s) {sorted(unknown)}; allowed: {', '.join(SECTIONS)}")
    missing = {s.split(".")[0] for s in sections} - set(cfg.keys()) - OPTIONAL_SECTIONS
    if missing:
        raise ConfigError(f"missing top-level section(s) {sorted(missing)}")
    for name, check in CHECKS.items():
        if name in sections and name.split(".")[0] in cfg:
            check(cfg, sections)


# --- shared by the checks ----------------------------------------------------------------------


def _import(path: str) -> Any:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _kinds(annotation: Any) -> set[str]:
    """The basic value kinds an annotation admits: {'int', 'float', 'str', 'bool', 'list', 'dict'}."""
    text = str(annotation).replace("typing.", "")
    kinds = {k for k in ("int", "float", "str", "bool") if re.search(rf"\b{k}\b", text)}
    if re.search(r"\b(list|List|Sequence|tuple|Tuple)\b", text):
        kinds.add("list")
    if re.search(r"\b(dict|Dict|Mapping)\b", text):
        kinds.add("dict")
    return kinds


def _kind(value: Any) -> str | None:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    for kind in (float, str):
        if isinstance(value, kind):
            return kind.__name__
    if isinstance(value, (dict, DictConfig)):
        return "dict"
    return "list" if isinstance(value, (list, tuple, ListConfig)) else None


def _type_matches(value: Any, default: Any, annotation: Any = inspect.Parameter.empty) -> bool:
    """Whether `value` fits the parameter: its annotation if it names basic types, else its default."""
    if value is None:
        return True
    allowed = set() if annotation is inspect.Parameter.empty else _kinds(annotation)
    if not allowed and default is not None and default is not inspect.Parameter.empty:
        allowed = {_kind(default)} - {None}
    if not allowed:
        return True  # nothing to check against (e.g. a Callable): the class validates it
    if "float" in allowed:
        allowed.add("int")  # an integer is a valid float (lr: 1)
    return _kind(value) in allowed


def _check_target_node(key: str, node: Any) -> None:
    if not isinstance(node, (dict, DictConfig)) or "_target_" not in node:
        raise ConfigError(f"{key}: expected a config with a _target_, got {node!r}")
    allowed = ALLOWED_TARGETS[key]
    target = node["_target_"]
    if target not in allowed:
        raise ConfigError(f"{key}._target_={target}: unknown class; allowed: {', '.join(allowed)}")
    params = inspect.signature(_import(target)).parameters
    accepted = set(params) - {"self"} - INJECTED.get(key, set())
    for name, value in node.items():
        if name in ("_target_", "_partial_") or name in EXTRA_KEYS.get(key, set()):
            continue
        if f"{key}.{name}" in ALLOWED_TARGETS:
            _check_target_node(f"{key}.{name}", value)
            continue
        if name not in accepted:
            raise ConfigError(
                f"{key}.{name}: unknown key for {target}; allowed: {', '.join(sorted(accepted))}"
            )
        default = params[name].default
        annotation = params[name].annotation
        if not _type_matches(value, default, annotation):
            expected = annotation if annotation is not inspect.Parameter.empty else type(default).__name__
            raise ConfigError(f"{key}.{name}={value!r}: wrong type, expected {expected}")


def _positive(cfg: DictConfig, key: str, kind: type = int) -> None:
    value = OmegaConf.select(cfg, key)
    ok = isinstance(value, kind) or (kind is float and isinstance(value, int))
    if isinstance(value, bool) or not ok or value <= 0:
        raise ConfigError(f"{key}={value!r}: must be a positive {kind.__name__}")


def _check_folder(cfg: DictConfig, sections: set[str]) -> None:
    """data=folder: a path, packing settings that agree with their derived keys, a model that fits them."""
    from aeflow.data.pack import check_spec, spec_from_config

    if OmegaConf.is_missing(cfg.data, "path") or not isinstance(cfg.data.get("path"), str):
        raise ConfigError(
            f"data.path={cfg.data.get('path', '???')!r}: set it to your images folder, "
            "e.g. dvc exp run -S data=folder -S data.path=/path/to/images"
        )
    spec = spec_from_config(cfg.data)
    check_spec(spec, cfg.data.get("input_features"), cfg.data.get("files"))
    if "model.networks" not in sections:
        return
    encoder, (channels, height, width) = cfg.model.encoder, spec.shape
    if "image_size" in encoder and height_width(encoder.image_size) != (height, width):
        raise ConfigError(
            f"model.encoder.image_size={encoder.image_size} with data.image_size=[{height}, {width}]: "
            "the conv model takes images of its image_size; set it to the data's [H, W]"
        )
    if encoder.get("in_channels", channels) != channels:
        raise ConfigError(
            f"model.encoder.in_channels={encoder.in_channels}: the data has {channels} channel(s)"
        )
    if encoder.get("in_features", spec.pixels) != spec.pixels:
        raise ConfigError(
            f"model.encoder.in_features={encoder.in_features}: the data has {spec.pixels} pixels"
        )


def _check_image_shapes(cfg: DictConfig) -> None:
    """The conv model's sides suit its strides; the dense decoder's image holds its outputs."""
    encoder, decoder = cfg.model.get("encoder") or {}, cfg.model.get("decoder") or {}
    if "image_size" in encoder and encoder.get("channels"):
        try:
            check_conv_size(encoder.image_size, len(encoder.channels))
        except ValueError as exc:
            raise ConfigError(
                f"model.encoder.image_size={encoder.image_size} with model.encoder.channels="
                f"{list(encoder.channels)}: {exc}"
            ) from None
    if "out_features" in decoder and decoder.get("image_size") is not None:
        height, width = height_width(decoder.image_size)
        shape = (decoder.get("out_channels", 1), height, width)
        if shape[0] * height * width != decoder.out_features:
            raise ConfigError(
                f"model.decoder.out_features={decoder.out_features}: the decoder's image, "
                f"{shape[0]} channel(s) of {height}x{width}, has {shape[0] * height * width} values"
            )
