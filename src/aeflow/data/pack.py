"""Decode a folder of images once into one uint8 array file per split, for memory-mapped training.

`pack_folder` writes into `out_dir`, for each split in SPLITS:
- `<split>_images.npy`: uint8 (N, C, H, W), pixels as decoded (0-255);
- `<split>_labels.npy`: int64 (N,), the class index, or -1 for unlabeled images;
- `<split>_files.txt`: the source path of each row, relative to the folder;
and `manifest.json` (the pack settings, classes, counts and shape) last.

Every file is decoded and checked (empty, unreadable, truncated, an unsupported
mode) before anything is replaced; the error names every bad file. Each array
is written under a temporary name and renamed into place, and the manifest that
readers require is removed before the first rename and written after the last:
an interrupted pack leaves either the previous complete set or no manifest,
never a half-written array that a reader accepts.
"""

from __future__ import annotations

import io
import json
import logging
import multiprocessing
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps
from tqdm import tqdm

from aeflow.data.folder import SPLITS, FolderIndex, check_fractions, scan_folder
from aeflow.errors import ConfigError, DataError
from aeflow.io import atomic_path, remove_temporaries, write_bytes, write_json, write_text

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = 1  # bumped when the files' layout changes, so an old pack is refused rather than misread
RESIZE_MODES = ("crop", "resize")
CHANNELS = {1: "L", 3: "RGB"}
# 8-bit modes Pillow converts to L or RGB without losing meaning (alpha is dropped).
# Others (16-bit I;16, 32-bit I and F, CMYK, ...) would need a scaling choice the user should make.
SUPPORTED_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA")


@dataclass(frozen=True)
class PackSpec:
    """How a folder becomes arrays: image size (H, W), channels, crop or resize, and the split."""

    image_size: tuple[int, int]
    channels: int = 1
    resize: str = "crop"
    val_size: float = 0.1
    test_size: float = 0.1
    split_seed: int = 0

    def __post_init__(self) -> None:
        size = self.image_size
        if len(size) != 2 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in size):
            raise ConfigError(f"data.image_size={list(size)!r}: must be [H, W], two positive integers")
        object.__setattr__(self, "image_size", (int(size[0]), int(size[1])))
        if self.channels not in CHANNELS:
            raise ConfigError(f"data.channels={self.channels!r}: allowed: 1 (grey), 3 (RGB)")
        if self.resize not in RESIZE_MODES:
            raise ConfigError(f"data.resize={self.resize!r}: allowed: {', '.join(RESIZE_MODES)}")
        check_fractions(self.val_size, self.test_size)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, *self.image_size)  # (C, H, W)

    @property
    def pixels(self) -> int:
        return self.channels * self.image_size[0] * self.image_size[1]  # C * H * W

    def as_dict(self) -> dict:
        return {**asdict(self), "image_size": list(self.image_size)}


def spec_from_config(data: Mapping[str, Any]) -> PackSpec:
    """The PackSpec of a `data=folder` config node (conf/data/folder.yaml)."""
    return PackSpec(
        tuple(data["image_size"]),
        data["channels"],
        data["resize"],
        data["val_size"],
        data["test_size"],
        data["split_seed"],
    )


def check_spec(spec: PackSpec, input_features: int | None, files: Mapping[str, Any] | None) -> None:
    """The keys derived from the settings agree with them: `input_features` is C*H*W, `files` the settings."""
    if input_features is not None and input_features != spec.pixels:
        raise ConfigError(
            f"data.input_features={input_features}: {spec.channels} channel(s) of "
            f"{spec.image_size[0]}x{spec.image_size[1]} are {spec.pixels} inputs; "
            f"set data.input_features={spec.pixels}"
        )
    if files is not None and dict(files) != spec.as_dict():
        raise ConfigError(
            f"data.files={dict(files)}: it records the packing settings for DVC and must equal "
            f"{spec.as_dict()}; leave it as conf/data/folder.yaml fills it"
        )


def split_files(split: str) -> dict[str, str]:
    """The file names of one split's images, labels and source list."""
    return {"images": f"{split}_images.npy", "labels": f"{split}_labels.npy", "files": f"{split}_files.txt"}


def _fit(image: Image.Image, height: int, width: int, resize: str) -> Image.Image:
    if image.size == (width, height):
        return image  # already the size: pixels kept exactly
    if resize == "resize":
        return image.resize((width, height), Image.Resampling.BILINEAR)
    # crop: scale so the image covers H x W, keeping its aspect ratio, then cut out the centre.
    scale = max(width / image.width, height / image.height)
    scaled = (max(width, round(image.width * scale)), max(height, round(image.height * scale)))
    if scaled != image.size:
        image = image.resize(scaled, Image.Resampling.BILINEAR)
    left, top = (scaled[0] - width) // 2, (scaled[1] - height) // 2
    return image.crop((left, top, left + width, top + height))


class BadImage(ValueError):
    """A file that cannot be packed; the message says why."""


def decode_image(path: str | Path, spec: PackSpec) -> np.ndarray:
    """uint8 (C, H, W) of the image at `path`, upright by its EXIF orientation; BadImage if unusable."""
    path = Path(path)
    if path.stat().st_size == 0:
        raise BadImage("empty file (0 bytes)")
    try:
        with Image.open(path) as image:
            image.load()  # decodes every byte: a truncated file fails here, not in training
            if image.mode not in SUPPORTED_MODES:
                raise BadImage(
                    f"mode {image.mode} is not supported (allowed: {', '.join(SUPPORTED_MODES)}); "
                    "save it as 8-bit grey or RGB"
                )
            # Cameras store portrait photos sideways with an orientation tag that viewers apply.
            upright = ImageOps.exif_transpose(image)
            fitted = _fit(upright.convert(CHANNELS[spec.channels]), *spec.image_size, spec.resize)
            pixels = np.asarray(fitted, dtype=np.uint8)
    except BadImage:
        raise
    except Exception as exc:  # noqa: BLE001 (Pillow raises OSError, SyntaxError, struct.error, ...)
        raise BadImage(f"unreadable image ({type(exc).__name__}: {exc})") from None
    return pixels.reshape(*spec.image_size, spec.channels).transpose(2, 0, 1)  # (C, H, W)


def _decode_job(job: tuple[str, PackSpec]) -> np.ndarray | str:
    """What a pool worker returns: the pixels, or why the file is bad (exceptions do not pickle well)."""
    try:
        return decode_image(*job)
    except (BadImage, OSError) as exc:  # OSError: the file vanished or cannot be opened
        return str(exc)


def _decoded(root: Path, names: Sequence[str], spec: PackSpec, pool) -> Iterator[np.ndarray | str]:
    jobs = ((str(root / name), spec) for name in names)
    if pool is None:
        return map(_decode_job, jobs)
    return pool.imap(_decode_job, jobs, chunksize=64)


SURVEY_SAMPLE = 500  # images whose headers `survey` reads: a fixed number, whatever the folder's size
GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")


@dataclass(frozen=True)
class FolderShape:
    """The most common image size (H, W) and channels among the `sampled` images of a folder."""

    image_size: tuple[int, int]
    channels: int
    share: float  # of the sampled images that have both
    sampled: int

    def overrides(self) -> str:
        """The `dvc exp run` options that pack the images at this size and channels."""
        (height, width), c = self.image_size, self.channels
        return (
            f"-S data.image_size=[{height},{width}] -S data.channels={c} "
            f"-S data.input_features={c * height * width}"
        )


def survey(root: str | Path, names: Sequence[str], sample: int = SURVEY_SAMPLE) -> FolderShape:
    """The most common size and channels of the images `names` under `root`, from the headers of
    `sample` of them evenly spread over the sorted list (Pillow reads no pixels for this)."""
    from collections import Counter

    names = sorted(names)
    step = max(1, len(names) // sample)
    found: Counter = Counter()
    for name in names[::step][:sample]:
        try:
            with Image.open(Path(root) / name) as image:
                width, height = image.size
                if image.getexif().get(0x0112) in (5, 6, 7, 8):  # stored sideways: shown upright
                    width, height = height, width
                found[(height, width), 1 if image.mode in GREY_MODES else 3] += 1
        except Exception:  # noqa: BLE001,S112 (a bad file is named by the pack itself)
            continue
    if not found:
        raise DataError(f"{root}: none of {len(names)} image(s) could be read")
    (size, channels), count = found.most_common(1)[0]
    return FolderShape(size, channels, count / sum(found.values()), sum(found.values()))


def check_shape(source: Path, index: FolderIndex, spec: PackSpec) -> FolderShape:
    """Log the folder's most common size and channels; warn, with the options that keep them,
    when the settings convert the images to another size or to grey."""
    names = [name for split in SPLITS for name in index.files[split]]
    found = survey(source, names)
    colour = "RGB" if found.channels == 3 else "grey"
    log.info(
        "%s: %.0f%% of %d sampled images are %dx%d %s",
        source,
        100 * found.share,
        found.sampled,
        *found.image_size,
        colour,
    )
    if (found.image_size, found.channels) != (spec.image_size, spec.channels):
        wanted = "RGB" if spec.channels == 3 else "grey"
        log.warning(
            "data.image_size=%s data.channels=%d: the images (mostly %dx%d %s) are packed as %dx%d %s; "
            "to keep their size and colour, run with %s",
            list(spec.image_size),
            spec.channels,
            *found.image_size,
            colour,
            *spec.image_size,
            wanted,
            found.overrides(),
        )
    return found


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def pack_folder(
    source: str | Path,
    out_dir: str | Path,
    spec: PackSpec,
    workers: int | None = None,
    progress: bool = True,
) -> dict:
    """Pack the images under `source` into `out_dir` (see the module docstring); return the manifest.

    `workers`: decoding processes (None: one per core; 1: decode in this process).
    """
    source, out_dir = Path(source), Path(out_dir)
    index = scan_folder(source, spec.val_size, spec.test_size, spec.split_seed)
    check_shape(source, index, spec)
    return write_pack(source, out_dir, index, spec, workers, progress)


def write_pack(
    source: Path,
    out_dir: Path,
    index: FolderIndex,
    spec: PackSpec,
    workers: int | None,
    progress: bool,
    extra: Callable[[ExitStack], list[str]] | None = None,
    manifest_extra: Mapping[str, Any] | None = None,
    noun: str = "image",
) -> dict:
    """Decode every split of `index` into `out_dir`, all or nothing; return the manifest.

    `extra(stack)` writes further files inside the same transaction (atomic paths entered on
    `stack`) and returns its bad files; `manifest_extra` adds keys to the manifest.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in remove_temporaries(out_dir):
        log.info("removed %s, left by an interrupted pack", stale)
    workers = workers or default_workers()
    with ExitStack() as stack:
        bad: list[str] = extra(stack) if extra is not None else []
        pool = None
        if workers > 1:
            # spawn, not fork: the caller may hold threads (torch, tqdm's monitor) that fork would copy.
            pool = stack.enter_context(multiprocessing.get_context("spawn").Pool(workers))
        for split in SPLITS:
            names = split_files(split)
            tmp = {key: stack.enter_context(atomic_path(out_dir / name)) for key, name in names.items()}
            bad += _write_split(source, index, split, spec, pool, tmp, progress)
        if bad:
            raise DataError(
                f"{len(bad)} bad {noun} file(s) in {source}; fix or remove them and re-run:\n  "
                + "\n  ".join(bad)
            )
        # Readers require the manifest: none while the arrays are being renamed into place.
        (out_dir / MANIFEST).unlink(missing_ok=True)
    manifest = {
        "format": FORMAT,
        "spec": spec.as_dict(),
        "shape": list(spec.shape),
        "classes": index.classes,
        "counts": index.counts(),
        "split_folders": index.split_folders,
        **(manifest_extra or {}),
    }
    write_json(out_dir / MANIFEST, manifest)
    log.info("packed %s into %s: %s images of %s", source, out_dir, index.counts(), spec.shape)
    return manifest


def _write_split(
    root: Path, index: FolderIndex, split: str, spec: PackSpec, pool, tmp: dict[str, Path], progress: bool
) -> list[str]:
    """Decode one split into the temporary files `tmp`; return '<file>: <reason>' for each bad file."""
    names = index.files[split]
    images = np.lib.format.open_memmap(
        tmp["images"], mode="w+", dtype=np.uint8, shape=(len(names), *spec.shape)
    )
    bad = []
    bar = tqdm(total=len(names), desc=f"packing {split}", unit="img", disable=not progress or not names)
    with bar:
        for i, pixels in enumerate(_decoded(root, names, spec, pool)):
            if isinstance(pixels, str):
                bad.append(f"{names[i]}: {pixels}")
            else:
                images[i] = pixels
            bar.update()
    images.flush()
    del images  # closes the map before the file is synced and renamed
    labels = io.BytesIO()
    np.lib.format.write_array(labels, np.asarray(index.labels[split], dtype=np.int64))  # .npy bytes
    write_bytes(tmp["labels"], labels.getvalue())
    # One joined string, not a new string per name first: the list is one split's every file.
    write_text(tmp["files"], "\n".join(names) + "\n" if names else "")
    return bad


def read_manifest(data_dir: str | Path) -> dict:
    """The manifest of a complete pack in `data_dir`; DataError saying how to make one otherwise."""
    path = Path(data_dir) / MANIFEST
    if not path.is_file():
        raise DataError(
            f"{data_dir}: no packed images ({MANIFEST} missing: never packed, or the pack was "
            "interrupted); run `dvc repro download` with data=folder and data.path set"
        )
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise DataError(
            f"{path}: format {manifest.get('format')}, expected {FORMAT}; re-pack: dvc repro -f download"
        )
    return manifest


def main() -> None:
    """`python -m aeflow.data.pack FOLDER`: the folder's most common size and channels, and the
    options that pack it so."""
    import sys

    if len(sys.argv) != 2:
        sys.exit("usage: python -m aeflow.data.pack FOLDER")
    index = scan_folder(sys.argv[1])
    found = survey(sys.argv[1], [name for split in SPLITS for name in index.files[split]])
    colour = "RGB" if found.channels == 3 else "grey"
    sys.stdout.write(
        f"{found.share:.0%} of {found.sampled} sampled images are {found.image_size[0]}x"
        f"{found.image_size[1]} {colour}; pack them so with:\n  dvc exp run -S data=folder "
        f"-S data.path={sys.argv[1]} {found.overrides()}\n"
    )


if __name__ == "__main__":
    main()
