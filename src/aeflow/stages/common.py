"""What every stage entry point shares: logging set-up and user-facing errors."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path

from aeflow.errors import AeflowError


def run_stage(main: Callable[[], None]) -> None:
    """Run `main`; an AeflowError ends the process with its message and no traceback.

    First it warns when params.yaml is not what conf/ composes to (a `dvc repro` after editing
    conf/, or a hand-edited params.yaml): the stage would otherwise run an old config silently.
    """
    from aeflow.config.params import PARAMS_FILE, composition_drift
    from aeflow.numerics.modes import apply_from_params

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if Path(PARAMS_FILE).is_file() and (drift := composition_drift()):
        logging.getLogger("aeflow").warning("%s", drift)
    try:
        apply_from_params(PARAMS_FILE)  # the numerics pins, before anything imports torch
        main()
    except AeflowError as exc:
        logging.getLogger("aeflow").error("%s", exc)
        sys.exit(f"error: {exc}")
