"""`aeflow-encode`: codes and reconstructions for a folder of PNG images or an .npy array.

    aeflow-encode digits/ --model models:/aeflow-mnist@champion --out encoded/
    aeflow-encode digits.npy --checkpoint models/best.ckpt --params params.yaml --out encoded/

Input: a folder of H x W PNGs (the model's image size, 28 x 28 for MNIST;
sorted by name; grey, or colour for a model trained on RGB images), or an .npy
array (N, H, W) / (N, C, H, W) / (N, C*H*W), uint8 in 0..255 or floats in [0, 1].
Output in --out: codes.npy (N, latent_dim), reconstructions.npy of the input's
shape ((N, H, W) or (N, 3, H, W)) in [0, 1], names.txt (one input name per row)
and reconstructions/<name>.png; with --scores also scores.npy (N,) and
is_anomaly.npy (N,) from the model's anomaly detector (the logged model's, or for the
pipeline's best checkpoint the package stage's detector.json in `paths.package`).

The model is an MLflow model URI (models:/<name>/<version>, models:/<name>@<alias>,
runs:/<run_id>/model; resolved against MLFLOW_TRACKING_URI or the project's
store) or a Lightning checkpoint with the params.yaml it was trained with
(weights loaded with torch.load(weights_only=True)).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from aeflow.errors import AeflowError
from aeflow.models.shapes import unflatten_square

log = logging.getLogger(__name__)

Predict = Callable[[np.ndarray, str], np.ndarray]


class InputError(AeflowError):
    """The images to encode cannot be read."""


def read_images(source: str | Path) -> tuple[np.ndarray, list[str]]:
    """float32 (N, H, W) grey or (N, 3, H, W) colour images in [0, 1] and a name per image, from a
    PNG folder (colour if any image is) or an .npy file."""
    source = Path(source)
    if source.is_dir():
        from PIL import Image

        files = sorted(p for p in source.iterdir() if p.suffix.lower() == ".png")
        if not files:
            raise InputError(f"{source}: no .png files")
        opened = [Image.open(path) for path in files]
        try:
            # The colour modes (a palette may hold colours too): the folder is read as RGB.
            colour = any(img.mode in ("RGB", "RGBA", "P", "CMYK", "YCbCr") for img in opened)
            arrays = [np.asarray(img.convert("RGB" if colour else "L"), dtype=np.uint8) for img in opened]
        finally:
            for img in opened:
                img.close()
        shapes = {a.shape[:2] for a in arrays}
        if len(shapes) != 1:
            raise InputError(f"{source}: images of different sizes {sorted(shapes)}")
        stacked = np.stack(arrays)  # (N, H, W) or (N, H, W, 3)
        if colour:
            stacked = stacked.transpose(0, 3, 1, 2)  # (N, 3, H, W), channels first as in training
        return stacked.astype(np.float32) / 255.0, [p.stem for p in files]
    if source.suffix == ".npy" and source.is_file():
        array = np.load(source, allow_pickle=False)
        if array.ndim == 2:
            try:
                array = unflatten_square(array)  # square grey images, as MNIST's rows
            except ValueError:
                pass  # other rows (RGB: C*H*W, channels first): the model checks their size
        if array.ndim not in (2, 3, 4) or (array.ndim == 4 and array.shape[1] not in (1, 3)):
            raise InputError(
                f"{source}: expected (N, H, W), (N, C, H, W) with C 1 or 3, or (N, C*H*W), "
                f"got shape {array.shape}"
            )
        if np.issubdtype(array.dtype, np.integer):
            array = array.astype(np.float32) / 255.0
        array = array.astype(np.float32)
        if array.size and (array.min() < 0 or array.max() > 1):
            raise InputError(f"{source}: float images must be in [0, 1]")
        return array, [f"{i:05d}" for i in range(len(array))]
    raise InputError(f"{source}: expected a folder of .png files or an .npy file")


def from_model_uri(uri: str, tracking_uri: str | None = None) -> Predict:
    import mlflow

    from aeflow.tracking import runs as tracking

    mlflow.set_tracking_uri(tracking.tracking_uri(tracking_uri))
    model = mlflow.pyfunc.load_model(uri)
    return lambda x, output: np.asarray(model.predict(x, params={"output": output}))


def from_checkpoint(checkpoint: str | Path, params: str | Path) -> Predict:
    from aeflow.config.params import load_params
    from aeflow.evaluation.anomaly import DetectorState
    from aeflow.models.weights import load_weights
    from aeflow.serving import pyfunc as serving

    cfg = load_params(params, sections=("model", "optimizer"))
    model = load_weights(cfg, checkpoint)  # torch.load(weights_only=True)
    detector = detector_path(cfg, checkpoint)
    state = DetectorState.load(detector) if detector.is_file() else None
    return lambda x, output: serving.predict(model, x, output, state)


def detector_path(cfg, checkpoint: str | Path) -> Path:
    """The anomaly detector fitted for `checkpoint` (for --scores): the package stage's for the
    pipeline's best checkpoint, else a detector.json beside the checkpoint."""
    from aeflow.models.weights import BEST, checkpoint_path
    from aeflow.serving.package import DETECTOR

    paths = cfg.get("paths") or {}
    if "checkpoints" in paths and "package" in paths:
        if Path(checkpoint).resolve() == checkpoint_path(cfg, BEST).resolve():
            return Path(paths.package) / DETECTOR
    return Path(checkpoint).with_name(DETECTOR)


def encode(
    images: np.ndarray, names: list[str], predict: Predict, out: str | Path, scores: bool = False
) -> dict[str, Path]:
    """Write codes, reconstructions and their PNGs for `images` ((N, H, W) grey or (N, C, H, W)) to
    `out`; with `scores`,
    also each image's anomaly score and flag (scores.npy, is_anomaly.npy)."""
    from PIL import Image

    out = Path(out)
    (out / "reconstructions").mkdir(parents=True, exist_ok=True)
    flat = images.reshape(len(images), -1).astype(np.float32)
    codes = predict(flat, "code")
    recon = predict(flat, "reconstruction").reshape(images.shape)
    written = {
        "codes": out / "codes.npy",
        "reconstructions": out / "reconstructions.npy",
        "names": out / "names.txt",
    }
    np.save(written["codes"], codes.astype(np.float32))
    np.save(written["reconstructions"], recon.astype(np.float32))
    written["names"].write_text("".join(f"{n}\n" for n in names))
    if scores:
        for output, file in (("score", "scores.npy"), ("is_anomaly", "is_anomaly.npy")):
            written[output] = out / file
            np.save(written[output], np.asarray(predict(flat, output)))
    for name, image in zip(names, recon):
        pixels = np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)
        if pixels.ndim == 3:  # (C, H, W) -> the (H, W, C) Pillow writes
            pixels = pixels.transpose(1, 2, 0)
            pixels = pixels[..., 0] if pixels.shape[-1] == 1 else pixels
        if pixels.ndim == 2 or pixels.shape[-1] == 3:
            Image.fromarray(pixels).save(out / "reconstructions" / f"{name}.png")
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="aeflow-encode", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("input", help="a folder of PNG images or an .npy array")
    parser.add_argument("--out", required=True, help="output folder")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="MLflow model URI, e.g. models:/aeflow-mnist/1")
    source.add_argument("--checkpoint", help="Lightning checkpoint, e.g. models/best.ckpt")
    parser.add_argument("--params", default="params.yaml", help="config of --checkpoint (params.yaml)")
    parser.add_argument(
        "--scores",
        action="store_true",
        help="also write each image's anomaly score and flag (scores.npy, is_anomaly.npy)",
    )
    parser.add_argument(
        "--tracking-uri",
        help="MLflow tracking URI for --model (default: MLFLOW_TRACKING_URI, else the project's store)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    errors: tuple[type[Exception], ...] = (AeflowError, ValueError, OSError)
    if args.model:
        from mlflow.exceptions import MlflowException

        errors += (MlflowException,)
    try:
        images, names = read_images(args.input)
        predict = (
            from_model_uri(args.model, args.tracking_uri)
            if args.model
            else from_checkpoint(args.checkpoint, args.params)
        )
        written = encode(images, names, predict, args.out, scores=args.scores)
    except errors as exc:
        sys.exit(f"error: {exc}")
    codes = np.load(written["codes"])
    print(
        f"encoded {len(names)} images to codes {codes.shape[1:]} -> {written['codes']}; "
        f"reconstructions -> {written['reconstructions']} and {Path(args.out) / 'reconstructions'}/"
    )


if __name__ == "__main__":
    main()
