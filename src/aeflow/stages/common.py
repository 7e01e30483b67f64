"""What every stage entry point shares: logging set-up and user-facing errors."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from aeflow.errors import AeflowError


def run_stage(main: Callable[[], None]) -> None:
    """Run `main`; an AeflowError ends the process with its message and no traceback."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        main()
    except AeflowError as exc:
        logging.getLogger("aeflow").error("%s", exc)
        sys.exit(f"error: {exc}")
