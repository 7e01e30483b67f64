"""Every file a pipeline stage writes goes through aeflow.io's temporary-file-then-rename.

A kill mid-write must never leave a truncated checkpoint, metrics file or
image that DVC would cache. This scans the modules the stages run for file
writes outside a `with atomic_path(...)` block; `aeflow.io` itself is the
one place allowed to write directly.
"""

from __future__ import annotations

import ast
from pathlib import Path

from aeflow.stages.imports import STAGES, stage_files
from tests.conftest import REPO

SRC = REPO / "src" / "aeflow"
# Every module a DVC stage runs (the CLIs and the config writer are not stages).
STAGE_MODULES = sorted({path for stage in STAGES for path in stage_files(stage, root=SRC)})
WRITES = {"write_text", "write_bytes", "save", "savefig", "savez", "to_csv", "dump"}
# shutil's copies and moves write their destination in place.
COPIES = {"copy", "copy2", "copyfile", "copytree", "move"}


def direct_writes(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}

    def in_atomic_block(node: ast.AST) -> bool:
        while node in parents:
            node = parents[node]
            if isinstance(node, ast.With) and any(
                isinstance(item.context_expr, ast.Call)
                and ast.unparse(item.context_expr.func).endswith("atomic_path")
                for item in node.items
            ):
                return True
        return False

    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _writes(node) and not in_atomic_block(node):
            found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)[:80]}")
    return found


def _open_mode(call: ast.Call, positional: int) -> ast.AST | None:
    """The mode argument of an open() call: `mode=` or the `positional`-th argument."""
    for keyword in call.keywords:
        if keyword.arg == "mode":
            return keyword.value
    return call.args[positional] if len(call.args) > positional else None


def _writes(call: ast.Call) -> bool:
    """Whether `call` writes a file: a writer method, open() or Path.open() for writing (the mode
    positional or `mode=`; a mode that is not a constant counts), or shutil's copies and moves."""
    func = call.func
    if isinstance(func, ast.Attribute):
        if func.attr in WRITES or (ast.unparse(func.value) == "shutil" and func.attr in COPIES):
            return True
        if func.attr != "open" or ast.unparse(func.value) in ("Image", "gzip", "zipfile"):
            return False
        mode = _open_mode(call, 0)  # path.open(mode): only a constant is known to be a mode
        return isinstance(mode, ast.Constant) and any(c in str(mode.value) for c in "wax")
    elif isinstance(func, ast.Name) and func.id == "open":
        if call.args and ".lock" in ast.unparse(call.args[0]):
            return False  # lock files hold no data
        mode = _open_mode(call, 1)
    else:
        return False
    if mode is None:
        return False  # read mode
    return not isinstance(mode, ast.Constant) or any(c in str(mode.value) for c in "wax")


def test_stage_modules_write_files_only_atomically():
    problems = [w for rel in STAGE_MODULES if (SRC / rel).is_file() for w in direct_writes(SRC / rel)]
    assert not problems, "\n".join(problems)


def test_the_scan_catches_a_direct_write(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from pathlib import Path\nimport torch\n"
        "Path('m.json').write_text('{}')\n"
        "with atomic_path('x') as tmp:\n    torch.save({}, tmp)\n"
        "torch.save({}, 'y.ckpt')\n"
        "open('a.txt', mode='w').write('x')\n"
        "Path('b.txt').open('w')\n"
        "shutil.copy2('c', 'd')\n"
        "open('e.txt').read()\n"
        "Path('f.txt').open()\n"
        "open('g.lock', 'a')\n"
    )
    assert sorted(int(w.split(":")[1]) for w in direct_writes(bad)) == [3, 6, 7, 8, 9]
