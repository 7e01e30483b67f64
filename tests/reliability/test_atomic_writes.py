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
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        is_write = isinstance(func, ast.Attribute) and func.attr in WRITES
        if isinstance(func, ast.Name) and func.id == "open" and len(node.args) > 1:
            mode = node.args[1]
            is_lock = ".lock" in ast.unparse(node.args[0])  # lock files hold no data
            is_write = (
                isinstance(mode, ast.Constant) and any(c in str(mode.value) for c in "wax") and not is_lock
            )
        if is_write and not in_atomic_block(node):
            found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)[:80]}")
    return found


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
    )
    assert [w.split(":")[1] for w in direct_writes(bad)] == ["3", "6"]
