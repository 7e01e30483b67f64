"""`aeflow team up|down|env`: the team stack (aeflow.team.stack) in `.team/` of the project."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

from aeflow.errors import AeflowError
from aeflow.team import stack

DEFAULT_DIR = Path(".team")


def main(argv: list[str] | None = None) -> None:
    """Start, stop or describe the local team stack (PostgreSQL, S3 store, MLflow server)."""
    parser = argparse.ArgumentParser(prog="aeflow team", description=main.__doc__)
    parser.add_argument("action", choices=("up", "down", "env"), help="start, stop, or print the variables")
    parser.add_argument(
        "--dir", type=Path, default=DEFAULT_DIR, help="the stack's folder (default: .team of this folder)"
    )
    parser.add_argument("--wipe", action="store_true", help="with `up`: delete the stack's data first")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.action == "up":
            sys.stdout.write(stack.describe(stack.up(args.dir, wipe=args.wipe)))
        elif args.action == "down":
            stopped = stack.down(args.dir)
            sys.stdout.write("".join(f"stopped {s}\n" for s in stopped) or "nothing was running\n")
        else:
            if not (args.dir / stack.STATE_FILE).is_file():
                sys.exit(f"error: no team stack in {args.dir}: start one with `aeflow team up`")
            env = stack.Stack.load(args.dir).env()
            sys.stdout.write("".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items()))
    except AeflowError as exc:
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
