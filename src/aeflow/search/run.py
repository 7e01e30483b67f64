"""`aeflow search conf/search/<name>.yaml`: one worker of an Optuna study over the project's config.

Start it again with the same study name to resume (finished trials stay,
interrupted ones are marked FAILED); start several at once, on one machine
with the default journal file or on several machines with an RDB storage, and
they share the study's trials. The worker that sees the last trial finish
logs the best trial and the plots to the study's parent MLflow run and writes
the preset `conf/experiment/<study>_best.yaml`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import optuna

from aeflow.config.params import CONF_DIR
from aeflow.errors import AeflowError
from aeflow.search.space import SearchSpec, load_spec, with_overrides
from aeflow.search.storage import SEARCH_ROOT, STORAGE_ENV

if TYPE_CHECKING:
    from aeflow.search.worker import SearchResult


def run_search(
    spec: SearchSpec,
    storage_url: str | None = None,
    root: Path = SEARCH_ROOT,
    conf_dir: str | Path = CONF_DIR,
    seed: int | None = None,
) -> SearchResult:
    """Check `spec`, then run trials of its study until it has `spec.n_trials` complete or pruned ones."""
    base = spec.check(conf_dir)  # before any storage, run or training
    # Imported once the file is known good: torch, Lightning and MLflow take seconds to import.
    from aeflow.search.worker import work

    return work(spec, base, storage_url, root, conf_dir, seed)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="aeflow search", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("space", help="search file, e.g. conf/search/hinton2006.yaml")
    parser.add_argument("--study", help="study name (default: the file's `study`, else its name)")
    parser.add_argument("--n-trials", type=int, help="complete + pruned trials the study should reach")
    parser.add_argument(
        "--storage",
        help=f"RDB URL (e.g. postgresql://...) or journal file; default: "
        f"${STORAGE_ENV}, else {SEARCH_ROOT}/<study>.journal",
    )
    parser.add_argument("--seed", type=int, help="TPE sampler seed (give each worker its own)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    optuna.logging.enable_propagation()
    optuna.logging.disable_default_handler()
    try:
        spec = with_overrides(load_spec(args.space), study=args.study, n_trials=args.n_trials)
        result = run_search(spec, args.storage, seed=args.seed)
    except AeflowError as exc:
        sys.exit(f"error: {exc}")
    if result.preset is not None:
        best = result.study.best_trial
        sys.stdout.write(
            f"best trial {best.number}: {spec.metric} {best.value:.6g}\n"
            f"preset: {result.preset} (dvc exp run -S experiment={spec.preset_name})\n"
        )


if __name__ == "__main__":
    main()
