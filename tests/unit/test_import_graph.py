"""The package's folders form layers: no folder imports one that imports it back, at module level or
inside a function (a lazy import still runs the other folder's code, and makes it a dependency)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from aeflow.stages.imports import PACKAGE, PACKAGE_DIR, _imported


def package_modules() -> list[str]:
    names = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def unit(module: str) -> str:
    """The folder a module belongs to (`aeflow.data` for `aeflow.data.pack`); a top-level module
    (`aeflow.io`) is a unit of its own."""
    parts = module.split(".")
    in_folder = len(parts) > 1 and (PACKAGE_DIR / parts[1]).is_dir()
    return ".".join(parts[:2]) if in_folder else module


def edges(modules: Iterable[str], group=lambda m: m) -> dict[str, dict[str, list[str]]]:
    """{importer: {imported: ['a -> b', ...]}} between distinct groups of modules."""
    graph: dict[str, dict[str, list[str]]] = {}
    for module in modules:
        for target in _imported(module):
            a, b = group(module), group(target)
            if a != b and b != PACKAGE:
                graph.setdefault(a, {}).setdefault(b, []).append(f"{module} -> {target}")
    return graph


def cycle(graph: Mapping[str, Mapping[str, list[str]]]) -> list[str] | None:
    """One cycle of `graph` as the imports that make it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, {})):
            if state.get(nxt) == 1:
                loop = [*path[path.index(nxt) :], nxt]
                return [graph[a][b][0] for a, b in zip(loop, loop[1:], strict=False)]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_folders_import_each_other_one_way_only():
    assert cycle(edges(package_modules(), unit)) is None


def test_modules_import_each_other_one_way_only():
    assert cycle(edges(package_modules())) is None


def test_a_cycle_is_found_and_named_by_its_imports():
    graph = {"a": {"b": ["a.x -> b.y"]}, "b": {"c": ["b.y -> c.z"]}, "c": {"a": ["c.z -> a.x"]}}
    assert cycle(graph) == ["a.x -> b.y", "b.y -> c.z", "c.z -> a.x"]
    assert cycle({"a": {"b": ["a -> b"]}, "b": {}}) is None
    assert unit("aeflow.data.pack") == unit("aeflow.data") == "aeflow.data"
    assert unit("aeflow.io") == "aeflow.io"
