"""Per-pixel anomaly maps of reconstructions, and the image score taken from each map.

Both maps lie in [0, 1] for pixels in [0, 1], so that pixel metrics can bin them
on a fixed grid (aeflow.evaluation.pixel_metrics):

- `l2`: the root mean square over channels of (image - reconstruction): |residual|
  for grey images. Ranking pixels by it is ranking by squared error.
- `ssim`: (1 - SSIM) / 2 per pixel, SSIM over a `window` x `window` Gaussian
  window (sigma = 1.5 * window / 11: Wang et al.'s 1.5 for their 11) on reflect-padded images,
  averaged over channels. Bergmann et al. (VISAPP 2019) show it finds defects that
  change texture or structure but not brightness, which the L2 residual misses.

Either map may be smoothed with a Gaussian of `sigma` pixels. The image score is
the map's maximum, or the mean of its top `top_k` share of pixels (less sensitive
to one noisy pixel).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from aeflow.errors import ConfigError
from aeflow.evaluation.anomaly import as_float
from aeflow.evaluation.metrics import SSIM_K1, SSIM_K2, _window, blur_matrix

MAP_KINDS = ("l2", "ssim")
IMAGE_SCORES = ("max", "top_k")

Reconstruct = Callable[[torch.Tensor], torch.Tensor]  # float (B, C, H, W) in [0, 1] -> same shape


@dataclass(frozen=True)
class MapSettings:
    """How a map and its image score are made (config `inspection.*`, conf/experiment/inspection.yaml).

    kind: `l2` or `ssim`; window: the SSIM window's side (odd, pixels); sigma: the
    Gaussian smoothing of the map in pixels (0: none); score: `max` or `top_k`;
    top_k: the share of a map's pixels whose mean is the image score (for `top_k`).
    """

    kind: str = "ssim"
    window: int = 11
    sigma: float = 0.0
    score: str = "max"
    top_k: float = 0.01

    def __post_init__(self) -> None:
        if self.kind not in MAP_KINDS:
            raise ConfigError(f"inspection.map={self.kind!r}: allowed: {', '.join(MAP_KINDS)}")
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 3:
            raise ConfigError(f"inspection.ssim_window={self.window!r}: an odd number of pixels >= 3")
        if self.window % 2 == 0:
            raise ConfigError(f"inspection.ssim_window={self.window}: must be odd, e.g. {self.window + 1}")
        if self.sigma < 0:
            raise ConfigError(f"inspection.smoothing_sigma={self.sigma}: must be >= 0 (0: no smoothing)")
        if self.score not in IMAGE_SCORES:
            raise ConfigError(f"inspection.image_score={self.score!r}: allowed: {', '.join(IMAGE_SCORES)}")
        if not 0 < self.top_k <= 1:
            raise ConfigError(f"inspection.top_k={self.top_k}: a share of the pixels, in (0, 1]")


def _separable(maps: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """`window` slid over the last two axes of `maps` (reflect padding, same size).

    As two small matrix products (aeflow.evaluation.metrics.blur_matrix): at 256 pixels a side,
    measured 6x faster on one CPU thread than two 1-D convolutions, which do H (or W) / k times
    fewer multiply-adds but without BLAS.
    """
    height, width = (int(side) for side in maps.shape[-2:])  # tensors while traced: not cache keys
    key = tuple(window.tolist())
    rows = _blur(height, key).to(maps.dtype)
    cols = _blur(width, key).to(maps.dtype).T
    return rows @ maps @ cols


@functools.lru_cache(maxsize=8)
def _blur(n: int, window: tuple[float, ...]) -> torch.Tensor:
    """blur_matrix(n, window), built once per size and window: every batch reuses it, and a graph
    traced after one eager call (aeflow.serving.onnx_export) holds it as a constant rather than
    as its index_add_ steps, which ONNX export gets wrong (duplicate indices)."""
    return blur_matrix(n, torch.tensor(window, dtype=torch.float64))


def l2_map(images: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """(B, H, W): root mean square over channels of the residual; inputs (B, C, H, W) in [0, 1]."""
    return (images - recon).pow(2).mean(1).sqrt()


def ssim_map(
    images: torch.Tensor, recon: torch.Tensor, window: int = 11, chunk: int | None = 8
) -> torch.Tensor:
    """(B, H, W): (1 - SSIM) / 2 per pixel, averaged over channels; inputs (B, C, H, W) in [0, 1].

    A side smaller than `window` uses a uniform window as large as fits. Computed `chunk`
    images at a time: the SSIM terms take about 15 copies of the images they are computed on.
    `chunk=None`: the whole batch at once, for a traced graph (ONNX), whose slices would keep
    the traced batch size.
    """
    side = min(images.shape[-2:])
    kernel = _window(window, 1.5 * window / 11) if side >= window else _window(side - (1 - side % 2), None)
    if chunk is None:
        return _ssim_chunk(images, recon, kernel)
    return torch.cat(
        [
            _ssim_chunk(images[start : start + chunk], recon[start : start + chunk], kernel)
            for start in range(0, len(images), chunk)
        ]
    )


def _ssim_chunk(images: torch.Tensor, recon: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """ssim_map of one chunk, with the 1-D window `kernel`."""
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    x, y = images.float(), recon.float()
    mu_x, mu_y, xx, yy, xy = (_separable(m, kernel) for m in (x, y, x * x, y * y, x * y))
    var_x = (xx - mu_x * mu_x).clamp_min(0.0)
    var_y = (yy - mu_y * mu_y).clamp_min(0.0)
    cov = xy - mu_x * mu_y
    ssim = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ((1 - ssim) / 2).clamp(0.0, 1.0).mean(1)


def smooth(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """(B, H, W) maps blurred by a Gaussian of `sigma` pixels (window 2*ceil(3 sigma)+1); 0: unchanged."""
    if sigma <= 0:
        return maps
    radius = max(1, int(torch.ceil(torch.tensor(3 * sigma))))
    radius = min(radius, (min(maps.shape[-2:]) - 1) // 2)  # reflect padding needs a smaller window
    return _separable(maps, _window(2 * radius + 1, sigma))


def anomaly_map(
    images: torch.Tensor, recon: torch.Tensor, settings: MapSettings, chunk: int | None = 8
) -> torch.Tensor:
    """(B, H, W) float32 map in [0, 1] of `settings.kind`, smoothed by `settings.sigma`;
    `chunk`: images per SSIM step (see ssim_map)."""
    raw = l2_map(images, recon) if settings.kind == "l2" else ssim_map(images, recon, settings.window, chunk)
    return smooth(raw.float(), settings.sigma)


def reconstruction(reconstruct: Reconstruct, images: torch.Tensor) -> torch.Tensor:
    """The reconstruction of float images (B, C, H, W) in [0, 1] that every map is made from:
    float32, clamped into [0, 1], in the images' shape."""
    return reconstruct(images).float().clamp(0.0, 1.0).reshape_as(images)


def model_map(
    reconstruct: Reconstruct, images: torch.Tensor, settings: MapSettings, chunk: int | None = 8
) -> torch.Tensor:
    """(B, H, W) map of float images (B, C, H, W) in [0, 1] against their reconstruction: what the
    served model and its ONNX graph answer."""
    return anomaly_map(images, reconstruction(reconstruct, images), settings, chunk)


def image_scores(maps: torch.Tensor, settings: MapSettings) -> torch.Tensor:
    """(B,) image score of each (B, H, W) map: its maximum, or the mean of its top `top_k` pixels."""
    flat = maps.flatten(1)
    if settings.score == "max":
        return flat.amax(1)
    k = max(1, round(settings.top_k * flat.shape[1]))
    return flat.topk(k, dim=1).values.mean(1)


def batched_maps(
    reconstruct: Reconstruct,
    images: torch.Tensor,
    settings: tuple[MapSettings, ...],
    batch_size: int = 64,
) -> Iterator[tuple[slice, torch.Tensor, torch.Tensor, list[torch.Tensor]]]:
    """For each batch of uint8 `images` (N, H, W) or (N, C, H, W), possibly memory-mapped:
    (its rows, the float images (B, C, H, W), the reconstructions, one (B, H, W) map per settings).

    One reconstruction feeds every map kind; only one batch is in memory at a time.
    """
    for start in range(0, len(images), batch_size):
        rows = slice(start, min(start + batch_size, len(images)))
        x = as_float(images[rows])
        with torch.no_grad():
            recon = reconstruction(reconstruct, x)
        yield rows, x, recon, [anomaly_map(x, recon, s) for s in settings]
