"""The configuration reference, generated from conf/ and the code so that it cannot drift.

For every key of every file in conf/ it gives:
- the type: the schema's dataclass field (aeflow.config.schema) for the fixed sections, the
  signature of the class a `_target_` names for the nodes Hydra builds, else the YAML value's;
- the default: the value written in that file (a `???` is a value the user must give);
- the allowed values: the names the code checks against (the schema's allow-lists,
  aeflow.models.choices, the evaluation's scores and corruptions, a group's options);
- what it does: the YAML comment above (or beside) the key, else the schema field's comment,
  else the first sentence of the class's documentation of that argument.

`python -m aeflow.docs.config_reference [-o FILE]` prints (or writes) the page; the docs build
(aeflow.docs.mkdocs_hooks) renders it as configuration-reference.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib
import inspect
import logging
import re
import sys
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from aeflow.io import write_text

log = logging.getLogger(__name__)

CONF_DIR = Path("conf")
PAGE = "configuration-reference.md"
# conf/ groups that are not part of the composed config: search files for `aeflow search`.
SEARCH_GROUP = "search"
GLOBAL_PACKAGE = "# @package _global_"
HYDRA_KEYS = {
    "_target_": "The class Hydra builds from this node.",
    "_partial_": "Built as a partial: the project calls it later with the arguments it injects.",
}
# Lines of a YAML block mapping: indentation, key, the rest. Flow mappings and list items are values.
_KEY_LINE = re.compile(
    r"^(?P<indent>\s*)(?P<key>[A-Za-z_][\w.]*|\"[^\"]+\"|'[^']+')\s*:(?:\s|$)(?P<rest>.*)$"
)
_INLINE_COMMENT = re.compile(r"\s#\s*(?P<text>.*)$")


@dataclass(frozen=True)
class Entry:
    """One key of one conf/ file, as the reference shows it."""

    key: str  # dotted, from the config's root (data.batch_size), or the search file's root
    type: str
    default: str
    allowed: str
    description: str


# ---------------------------------------------------------------------------------------------
# Reading conf/: values with yaml, comments line by line


def flatten(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) for every leaf of a mapping; lists and empty mappings are leaves."""
    for key, value in node.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from flatten(value, f"{dotted}.")
        else:
            yield dotted, value


def comments(text: str) -> tuple[str, dict[str, str]]:
    """The file's leading comment, and the comment above or beside each key of a block mapping."""
    header: list[str] = []
    found: dict[str, str] = {}
    stack: list[tuple[int, str]] = []  # (indent, key) of the enclosing mappings
    pending: list[str] = []
    seen_key = False
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            if not seen_key and pending:
                header += pending  # a comment block separated from the first key describes the file
                pending = []
            continue
        if stripped.startswith("#"):
            if stripped != GLOBAL_PACKAGE:
                body = stripped[1:]
                # An indented comment line is a command to run, shown as code.
                pending.append(f"`{body.strip()}`" if body.startswith("   ") else body.strip())
            continue
        match = _KEY_LINE.match(line)
        if not match:
            pending = []  # a list item or a continued value
            continue
        if not seen_key and pending:
            header, pending = header + pending, []  # directly above the first key: still the file's
        seen_key = True
        indent, key = len(match["indent"]), match["key"].strip("\"'")
        while stack and stack[-1][0] >= indent:
            stack.pop()
        dotted = ".".join([k for _, k in stack] + [key])
        stack.append((indent, key))
        inline = _INLINE_COMMENT.search(match["rest"])
        text_ = " ".join(pending + ([inline["text"]] if inline else []))
        if text_:
            found[dotted] = text_
        pending = []
    return " ".join(header), found


def first_sentence(text: str) -> str:
    """The first sentence of a docstring's description (abbreviations such as e.g. do not end it)."""
    text = re.sub(r"\s+", " ", text).strip()
    for match in re.finditer(r"\.(\s|$)", text):
        before = text[: match.start()]
        if not re.search(r"(\be\.g|\bi\.e|\betc|\bvs|\bDefault: ``[^`]*``|\b[A-Za-z])$", before):
            return before + "."
    return text


# ---------------------------------------------------------------------------------------------
# Types and descriptions from the code


def _schema() -> Any:
    return importlib.import_module("aeflow.config.schema")


def _import(path: str) -> Any:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _type_name(annotation: Any) -> str:
    """A short, readable type: `int | None`, `list[int]`, `str` for a Literal of strings."""
    if annotation is inspect.Parameter.empty:
        return ""
    if isinstance(annotation, str):
        return annotation
    if annotation is type(None):
        return "None"
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " | ".join(sorted({type(a).__name__ for a in args}))
    if origin in (typing.Union, types.UnionType):
        names = dict.fromkeys(" | ".join(_type_name(a) for a in args).split(" | "))
        return " | ".join([n for n in names if n != "None"] + (["None"] if "None" in names else []))
    if origin is not None:
        inner = ", ".join(_type_name(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]" if inner else origin.__name__
    return getattr(annotation, "__name__", str(annotation))


def _literals(annotation: Any) -> list[str]:
    """The values of a type made only of Literals (and None), such as Lightning's `precision`."""
    if typing.get_origin(annotation) is typing.Literal:
        return [str(a) for a in typing.get_args(annotation)]
    members = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) not in (typing.Union, types.UnionType) or not members:
        return []
    if any(typing.get_origin(a) is not typing.Literal for a in members):
        return []
    return list(dict.fromkeys(v for a in members for v in _literals(a)))


@functools.cache
def _dataclass_fields(cls: type) -> dict[str, tuple[Any, str]]:
    """{field: (annotation, comment)} of a schema dataclass; the comment is the one beside the field."""
    hints = typing.get_type_hints(cls)
    notes: dict[str, str] = {}
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        source = ""
    pending: list[str] = []
    for line in source.splitlines()[1:]:
        stripped = line.strip()
        if stripped.startswith("#"):
            pending.append(stripped.lstrip("#").strip())
            continue
        match = re.match(r"^\s+(\w+)\s*:[^#]*(#\s*(?P<text>.*))?$", line)
        if match:
            notes[match[1]] = match["text"] or ""
            if pending and not notes[match[1]]:
                notes[match[1]] = " ".join(pending)
        pending = []
    return {f.name: (hints.get(f.name, f.type), notes.get(f.name, "")) for f in dataclasses.fields(cls)}


def _section_dataclass(section: str) -> type | None:
    """The schema's dataclass for a fixed section: `paths` -> PathsConfig, `mlflow` -> MlflowConfig."""
    schema = _schema()
    for name, obj in vars(schema).items():
        if dataclasses.is_dataclass(obj) and name.lower() == f"{section.replace('_', '')}config":
            return obj
    return None


def _unwrap_dataclass(annotation: Any) -> type | None:
    for arg in (annotation, *typing.get_args(annotation)):
        if dataclasses.is_dataclass(arg) and isinstance(arg, type):
            return arg
    return None


@functools.cache
def _argument_docs(target: str) -> dict[str, str]:
    """{argument: description} from the `Args:` section of a class's (or its __init__'s) docstring."""
    cls = _import(target)
    docs: dict[str, str] = {}
    for doc in (inspect.getdoc(cls.__init__) or "", inspect.getdoc(cls) or ""):
        lines = doc.splitlines()
        starts = [i for i, line in enumerate(lines) if line.strip() == "Args:"]
        if not starts:
            continue
        indent, name = None, None
        for line in lines[starts[0] + 1 :]:
            if not line.strip():
                continue
            depth = len(line) - len(line.lstrip())
            match = re.match(r"^\s*(\w+)\s*(\([^)]*\))?\s*:\s*(.*)$", line)
            if indent is None and match:
                indent = depth
            if indent is None or depth < indent:
                break  # the end of the section
            if depth == indent and match:
                name = match[1]
                docs.setdefault(name, "")
                docs[name] = match[3]
            elif name and depth > indent:
                docs[name] += " " + line.strip()
    return docs


def _dataclass_for(parts: list[str]) -> type | None:
    """The schema dataclass holding the key `parts`: paths.data -> PathsConfig, data.source.mirrors ->
    SourceConfig (a `_target_` node's extra key), callbacks.early_stopping.patience -> EarlyStoppingConfig."""
    cls, inner = _section_dataclass(parts[0]), parts[1:-1]
    extra = getattr(_schema(), "EXTRA_KEYS", {}).get(parts[0], ())
    if cls is None and len(parts) > 2 and parts[1] in extra:
        cls, inner = _section_dataclass(parts[1]), parts[2:-1]
    for part in inner:
        field = _dataclass_fields(cls).get(part) if cls is not None else None
        cls = _unwrap_dataclass(field[0]) if field else None
    return cls


def _signature(target: str) -> dict[str, inspect.Parameter]:
    try:
        cls = _import(target)
    except (ImportError, AttributeError):
        return {}
    try:
        return dict(inspect.signature(cls, eval_str=True).parameters)
    except (NameError, TypeError, ValueError):
        return dict(inspect.signature(cls).parameters)


def type_and_doc(composed: dict, key: str, value: Any) -> tuple[str, str, list[Any]]:
    """The key's type, its description and the values a Literal type allows, from the code."""
    parts = key.split(".")
    name = parts[-1]
    if name in HYDRA_KEYS:
        return ("str" if name == "_target_" else "bool"), HYDRA_KEYS[name], []
    cls = _dataclass_for(parts)
    if cls is not None and name in _dataclass_fields(cls):
        annotation, note = _dataclass_fields(cls)[name]
        return _type_name(annotation), note, _literals(annotation)
    parent = _get(composed, parts[:-1])
    target = parent.get("_target_") if isinstance(parent, dict) else None
    if isinstance(target, str):
        params = _signature(target)
        if name in params:
            param = params[name]
            kind = _type_name(param.annotation)
            if not kind and param.default not in (None, inspect.Parameter.empty):
                kind = type(param.default).__name__
            doc = first_sentence(_argument_docs(target).get(name, ""))
            return kind or _value_type(value), doc, _literals(param.annotation)
    return _value_type(value), "", []


def _get(node: Any, parts: list[str]) -> Any:
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _value_type(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        kinds = sorted({_value_type(v) for v in value} - {""})
        return f"list[{' | '.join(kinds)}]" if kinds else "list"
    return {dict: "dict", bool: "bool", int: "int", float: "float"}.get(type(value), "str")


# ---------------------------------------------------------------------------------------------
# Allowed values: where the code keeps each list of names


def _group_options(conf: Path, group: str) -> list[str]:
    return sorted(p.stem for p in (conf / group).glob("*.yaml"))


def _downloaded_sets(conf: Path) -> list[str]:
    """conf/data/ entries that the download stage fetches (an `evaluate.ood` set must be one)."""
    names = []
    for path in sorted((conf / "data").glob("*.yaml")):
        if "source" in (yaml.safe_load(path.read_text()) or {}):
            names.append(path.stem)
    return names


def _names(module: str, attribute: str) -> Callable[[Path], list[str]]:
    def names(_conf: Path) -> list[str]:
        return list(getattr(importlib.import_module(module), attribute))

    return names


# (glob on the dotted key, where the allowed values come from, how many may be given)
ALLOWED: list[tuple[str, Callable[[Path], list[str]], str]] = [
    ("model.*activation", _names("aeflow.models.choices", "ACTIVATIONS"), "one of"),
    ("model.*.norm", _names("aeflow.models.choices", "NORMS"), "one of"),
    ("model.noise", _names("aeflow.models.choices", "NOISES"), "one of"),
    ("model.loss", _names("aeflow.models.choices", "LOSSES"), "one of"),
    ("performance.float32_matmul_precision", _names("aeflow.config.schema", "MATMUL_PRECISIONS"), "one of"),
    ("performance.numerics", _names("aeflow.config.schema", "NUMERICS"), "one of"),
    ("scheduler.interval", _names("aeflow.models.autoencoder", "SCHEDULER_INTERVALS"), "one of"),
    ("data.resize", _names("aeflow.data.pack", "RESIZE_MODES"), "one of"),
    ("evaluate.score", _names("aeflow.evaluation.anomaly", "MODEL_SCORES"), "one of"),
    ("evaluate.corruptions", _names("aeflow.evaluation.corruptions", "CORRUPTIONS"), "any of"),
    ("evaluate.ood", _downloaded_sets, "any of"),
    ("pruner.type", _names("aeflow.search.space", "PRUNERS"), "one of"),
    ("objective.metric", _names("aeflow.search.space", "VALIDATION_METRICS"), "one of"),
    ("space.*", _names("aeflow.search.space", "RANGE_FORMS"), "a range:"),
]


def allowed_values(conf: Path, key: str) -> str:
    import fnmatch

    parts = key.split(".")
    if parts[-1] == "_target_":
        node = ".".join(parts[:-1])
        targets = _schema().ALLOWED_TARGETS.get(node)
        return _code_list("one of", targets) if targets else ""
    for pattern, source, how in ALLOWED:
        if fnmatch.fnmatchcase(key, pattern):
            try:
                return _code_list(how, source(conf))
            except (ImportError, AttributeError):
                return ""  # that list does not exist in this version of the code
    return ""


def _code_list(how: str, names: Any) -> str:
    return f"{how} " + ", ".join(f"`{n}`" for n in names)


# ---------------------------------------------------------------------------------------------
# The page


def _compose(conf: Path, overrides: list[str]) -> dict:
    """conf/ composed with `overrides`, interpolations left as written."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(conf.resolve()), version_base=None):
        cfg = hydra_compose(config_name="config", overrides=overrides)
    return OmegaConf.to_container(cfg, resolve=False)


def _show(value: Any) -> str:
    if value == "???":
        return "required (`???`)"
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    text = text.removesuffix("\n...").removesuffix("...").strip()
    return f"`{text}`".replace("|", "\\|")


def conf_files(conf: Path = CONF_DIR) -> list[Path]:
    """config.yaml, then every group's option files, group by group."""
    return [conf / "config.yaml", *sorted(conf.glob("*/*.yaml"))]


def file_entries(conf: Path, path: Path) -> tuple[str, list[Entry]]:
    """The file's description and an Entry for each of its keys."""
    text = path.read_text()
    data = yaml.safe_load(text) or {}
    header, notes = comments(text)
    group = path.parent.name if path.parent != conf else None
    is_global = text.lstrip().startswith(GLOBAL_PACKAGE)
    prefix = "" if group is None or is_global or group == SEARCH_GROUP else f"{group}."
    if group == SEARCH_GROUP:
        composed: dict = {}
    elif group is None:
        composed = _compose(conf, [])
    else:
        composed = _compose(conf, [f"{group}={path.stem}"])
    if group not in (None, SEARCH_GROUP) and not is_global:
        # The file's own keys (its `_target_` above all) decide its keys' types.
        composed[group] = {**(composed.get(group) or {}), **data}
    entries = []
    for key, value in flatten({k: v for k, v in data.items() if k != "defaults"}):
        full = prefix + key
        if composed:
            kind, code_doc, literals = type_and_doc(composed, full, value)
        else:
            kind, code_doc, literals = _value_type(value), "", []
        parents = [".".join(key.split(".")[:i]) for i in range(key.count("."), 0, -1)]
        description = notes.get(key) or code_doc or next((notes[p] for p in parents if p in notes), "")
        if group == SEARCH_GROUP and key.startswith("space."):
            description = description or f"The range searched for `{key.removeprefix('space.')}`."
        entries.append(
            Entry(
                key=full,
                type=kind,
                default=_show(value),
                allowed=allowed_values(conf, full if group != SEARCH_GROUP else key)
                or (_code_list("one of", literals) if literals else ""),
                description=description,
            )
        )
    return header, entries


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ") if text else "–"


def render(conf: str | Path = CONF_DIR) -> str:
    """The reference page (Markdown)."""
    conf = Path(conf)
    lines = [
        "# Configuration reference",
        "",
        "Generated from `conf/` and the code by `python -m aeflow.docs.config_reference` on every",
        "`make docs`: every key of every file in `conf/`, its type (from the config schema or the",
        "signature of the class it configures), its default (the value in that file), the values the",
        "code allows, and what it does (the comment above the key in `conf/`, else the code's own",
        'documentation). Set any key with `dvc exp run -S key=value` or `make run ARGS="key=value"`;',
        "pick a file of a group with `-S group=name`. See [Configuration](configuration.md).",
        "",
    ]
    files = [(path, *file_entries(conf, path)) for path in conf_files(conf)]
    # A key described in one file (mlp.yaml's model.encoder.norm) is described wherever it is set.
    known: dict[str, str] = {}
    for path, _, entries in files:
        for e in entries:
            if e.description and path.parent.name != SEARCH_GROUP:
                known.setdefault(e.key, e.description)
    current_group = ""
    undescribed = []
    for path, header, entries in files:
        entries = [dataclasses.replace(e, description=e.description or known.get(e.key, "")) for e in entries]
        group = path.parent.name if path.parent != conf else "config"
        if group != current_group:
            current_group = group
            lines += [f"## {_group_title(conf, group)}", ""]
            if group not in ("config", "experiment", SEARCH_GROUP):
                lines += [f"Options: {', '.join(f'`{group}={o}`' for o in _group_options(conf, group))}.", ""]
        relative = path.relative_to(conf.parent) if conf.parent != Path() else path
        lines += [f"### `{relative.as_posix()}`", ""]
        if header:
            lines += [header, ""]
        lines += ["| key | type | default | allowed | what it does |", "|---|---|---|---|---|"]
        for e in entries:
            kind = _cell(e.type and f"`{e.type}`")
            row = [f"`{e.key}`", kind, e.default, _cell(e.allowed), _cell(e.description)]
            lines.append("| " + " | ".join(row) + " |")
            if not e.description:
                undescribed.append(f"{relative}:{e.key}")
        lines.append("")
    if undescribed:
        log.info("keys with no description (add a comment above them in conf/): %s", ", ".join(undescribed))
    return "\n".join(lines)


def _group_title(conf: Path, group: str) -> str:
    titles = {
        "config": "Top level (`conf/config.yaml`)",
        "experiment": "Presets (`experiment=...`): keys set on top of the groups",
        SEARCH_GROUP: "Search files (`aeflow search conf/search/...`)",
    }
    return titles.get(group, f"Group `{group}`")


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description="Write the configuration reference page.")
    parser.add_argument("-o", "--out", help="file to write (default: print it)")
    parser.add_argument("--conf", default=str(CONF_DIR), help="the conf/ folder (default: conf)")
    args = parser.parse_args(argv)
    page = render(args.conf)
    if args.out:
        write_text(args.out, page)
    else:
        sys.stdout.write(page + "\n")


if __name__ == "__main__":
    main()
