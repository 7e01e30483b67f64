"""Each stage's code deps in dvc.yaml: exactly the files of its import closure (aeflow.stages.imports).

    python -m aeflow.stages.deps --write   # rewrite them in dvc.yaml (`make deps`)
    python -m aeflow.stages.deps           # exit 1 and name the stages whose deps differ

Only the `- src/aeflow/...` lines of each stage's `deps:` are written (the first such run of
lines, or right after `deps:`); comments, data deps and everything else stay as they are.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path

from aeflow.stages.imports import STAGES, stage_files

log = logging.getLogger(__name__)

DVC_YAML = "dvc.yaml"
CODE_DEP = re.compile(r"^(?P<indent>\s+)- src/aeflow/\S*\s*$")
STAGE = re.compile(r"^  (?P<name>[A-Za-z_][\w-]*):\s*$")
DEPS = re.compile(r"^    deps:\s*$")


def rewrite(text: str, files: dict[str, list[str]]) -> str:
    """dvc.yaml's `text` with the code deps of each stage in `files` replaced by its list."""
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    stage, in_deps, written = None, False, set()
    i = 0
    while i < len(lines):
        line = lines[i]
        if match := STAGE.match(line):
            stage, in_deps = match["name"], False
        elif DEPS.match(line):
            in_deps = stage in files
            out.append(line)
            i += 1
            if in_deps and not any(CODE_DEP.match(ln) for ln in _block(lines, i)):
                out += [f"      - {path}\n" for path in files[stage]]  # no code deps yet: first
                written.add(stage)
            continue
        elif in_deps and stage not in written and (match := CODE_DEP.match(line)):
            while i < len(lines) and CODE_DEP.match(lines[i]):
                i += 1
            out += [f"{match['indent']}- {path}\n" for path in files[stage]]
            written.add(stage)
            continue
        elif in_deps and not line.startswith("      ") and line.strip():
            in_deps = False
        out.append(line)
        i += 1
    if missing := set(files) - written:
        raise ValueError(f"{DVC_YAML}: no `deps:` for stage(s) {sorted(missing)}")
    return "".join(out)


def _block(lines: list[str], start: int) -> list[str]:
    """The lines of a `deps:` list that starts at `start`."""
    end = start
    while end < len(lines) and (lines[end].startswith("      ") or not lines[end].strip()):
        end += 1
    return lines[start:end]


def closures(root: Path) -> dict[str, list[str]]:
    return {stage: stage_files(stage, root=root) for stage in STAGES}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--write", action="store_true", help=f"rewrite the code deps in {DVC_YAML}")
    parser.add_argument("--root", default=".", help="the repository (where dvc.yaml is)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    root = Path(args.root).resolve()
    path = root / DVC_YAML
    text = path.read_text()
    new = rewrite(text, closures(root))
    if new == text:
        log.info("%s: every stage's code deps are its import closure", DVC_YAML)
        return 0
    if args.write:
        path.write_text(new)
        log.info("%s: code deps rewritten from the stages' import closures", DVC_YAML)
        return 0
    log.error("%s: code deps differ from the import closures; run `make deps`", DVC_YAML)
    return 1


if __name__ == "__main__":
    sys.exit(main())
