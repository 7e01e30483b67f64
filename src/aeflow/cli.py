"""`aeflow <command>`: the project's commands beside the DVC pipeline.

Each command lives with the code it drives and is imported only when run, so
`aeflow --help` stays fast.
"""

from __future__ import annotations

import importlib
import sys

# command -> (module with a `main(argv)`, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "config": ("aeflow.config.params", "write or check params.yaml from conf/ (what `dvc exp run` does)"),
    "encode": ("aeflow.serving.encode", "encode or reconstruct images with a trained model"),
    "record": ("aeflow.docs.records", "write results/NAME.json (a measurement the docs show)"),
    "reproduce": ("aeflow.tracking.reproduce", "rebuild an MLflow run from its id; judge its test metrics"),
    "search": ("aeflow.search.run", "hyperparameter search on Optuna over a conf/search/ file"),
    "team": ("aeflow.team.cli", "start or stop the local team stack: PostgreSQL, S3 store, MLflow server"),
    "promote": ("aeflow.tracking.promote", "register a run's model; move the champion alias if it is better"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    return "usage: aeflow <command> [args...]\n\ncommands:\n" + "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        sys.stdout.write(usage() + "\n")
        return
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        sys.exit(f"error: unknown command {name!r}\n\n{usage()}")
    module = importlib.import_module(COMMANDS[name][0])
    module.main(rest)


if __name__ == "__main__":
    main()
