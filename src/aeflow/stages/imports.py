"""The modules a stage runs: the static import closure of its entry point within the package.

Imports inside functions count (stages import lazily), and importing `a.b.c`
also runs `a/__init__.py` and `a/b/__init__.py`. `dvc.yaml`'s deps, the
atomic-write checks and the start-up benchmark all take their lists from here:
`python -m aeflow.stages.deps --write` (`make deps`) writes each stage's closure into
dvc.yaml, and a test fails when the two differ.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

PACKAGE = "aeflow"
PACKAGE_DIR = Path(__file__).resolve().parents[1]
# In the order `dvc repro` runs them.
STAGES = ("download", "baselines", "train", "evaluate", "package", "visualize")
# Modules that a module runs by file path, which no import statement names: MLflow runs the
# served model's code file when the package stage logs the model.
RUN_BY_PATH = {f"{PACKAGE}.serving.pyfunc": (f"{PACKAGE}.serving.model_code",)}


def module_path(module: str) -> Path | None:
    """The file of `module` inside the package (its `__init__.py` for a package), or None."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    base = PACKAGE_DIR.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported(module: str) -> set[str]:
    """Package modules that `module`'s source names in any import statement."""
    path = module_path(module)
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import
                anchor = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.add(base)
            # `from pkg import name`: name may be a submodule
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {m for m in found if module_path(m) is not None}


def _built_from_config(module: str) -> set[str]:
    """Modules that `module` imports by name at run time: Hydra builds every `_target_` the schema
    allows, and no import statement names those classes."""
    if module != f"{PACKAGE}.config.instantiate":
        return set()
    from aeflow.config.schema import ALLOWED_TARGETS

    targets = (t for allowed in ALLOWED_TARGETS.values() for t in allowed)
    return {t.rsplit(".", 1)[0] for t in targets if t.startswith(f"{PACKAGE}.")}


def _with_parents(module: str) -> set[str]:
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)}


@cache
def import_closure(module: str) -> frozenset[str]:
    """Every package module that running `module` may import, parents included."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        for name in _with_parents(todo.pop()):
            if name not in seen and module_path(name) is not None:
                seen.add(name)
                todo.extend(_imported(name) | _built_from_config(name) | set(RUN_BY_PATH.get(name, ())))
    return frozenset(seen)


def stage_module(stage: str) -> str:
    return f"{PACKAGE}.stages.{stage}"


def stage_files(stage: str, root: Path | None = None) -> list[str]:
    """The source files a stage runs, relative to `root` (the repository) in POSIX form."""
    root = root or PACKAGE_DIR.parents[1]
    return sorted(module_path(m).relative_to(root).as_posix() for m in import_closure(stage_module(stage)))


def import_statements(stage: str) -> list[str]:
    """The source of every import statement in a stage's entry point (module level and inside
    its functions): what the stage itself imports when it runs, to replay in a fresh interpreter
    (the start-up benchmark, and tests of what a stage loads)."""
    path = module_path(stage_module(stage))
    tree = ast.parse(path.read_text(), filename=str(path))
    nodes = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    return [ast.unparse(n) for n in sorted(nodes, key=lambda n: n.lineno)]
