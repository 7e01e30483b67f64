"""Reconstruction, probe and compression metrics. Images are (N, ...) tensors with pixels in [0, 1].

Metric names live here so the evaluate stage, the JSON files, MLflow, the
report and the tests spell them once.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

# Reconstruction (keys of metrics/evaluate.json under "test" and "pca").
SQ_ERR = "sq_err_per_image"
MSE = "mse"
BCE = "bce"
PSNR = "psnr"
SSIM = "ssim"
BY_DIGIT = "sq_err_per_image_by_digit"
# Feature quality: probes trained on training-set codes, scored on test-set codes.
KNN = "knn_acc"
LOGREG = "logreg_acc"
# Compression: squared error per image after quantising the codes.
SQ_ERR_FP16 = "sq_err_per_image_float16"
SQ_ERR_INT8 = "sq_err_per_image_int8"

# Images without labels (a folder without class subfolders): the label-based metrics (probes,
# per-class tables, one class vs. the rest) are left out, and this key of metrics/evaluate.json
# says why instead of a number.
SKIPPED = "skipped"
UNLABELLED_NOTE = (
    "the images have no labels (no class subfolders): k-NN and logistic-regression probes, "
    "per-class tables and one class vs. the rest are not computed"
)

RECONSTRUCTION_KEYS = (SQ_ERR, MSE, BCE, PSNR, SSIM)
PROBE_KEYS = (KNN, LOGREG)

# Human-readable names (report tables), with the better direction.
LABELS = {
    SQ_ERR: ("squared error per image", "lower"),
    MSE: ("MSE per pixel", "lower"),
    BCE: ("BCE per pixel", "lower"),
    PSNR: ("PSNR (dB)", "higher"),
    SSIM: ("SSIM", "higher"),
    KNN: ("k-NN accuracy", "higher"),
    LOGREG: ("logistic-regression accuracy", "higher"),
    SQ_ERR_FP16: ("squared error per image, float16 code", "lower"),
    SQ_ERR_INT8: ("squared error per image, 8-bit code", "lower"),
}


def sq_err_per_image(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(N,) sum over the pixels of each image of the squared error, pixels in [0, 1].

    Averaged over images this is the figure of Hinton & Salakhutdinov (2006).
    """
    return (recon - target).pow(2).flatten(1).sum(1)


def bce_per_image(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(N,) mean binary cross-entropy per pixel; recon is clamped into (0, 1) first."""
    eps = 1e-7
    loss = F.binary_cross_entropy(recon.clamp(eps, 1 - eps), target, reduction="none")
    return loss.flatten(1).mean(1)


def psnr(recon: torch.Tensor, target: torch.Tensor) -> float:
    """PSNR in dB over all pixels of all images, data range 1: 10 log10(1 / MSE)."""
    mse = (recon.double() - target.double()).pow(2).mean()
    return float(10.0 * torch.log10(1.0 / mse))


# SSIM as Wang et al. (2004) define it and torchmetrics computes it: an 11x11 Gaussian window
# (sigma 1.5) over the reflect-padded image, C1 = (0.01 L)^2, C2 = (0.03 L)^2 with data range L = 1,
# the SSIM map averaged over every pixel of an image.
SSIM_SIGMA, SSIM_WINDOW, SSIM_K1, SSIM_K2 = 1.5, 11, 0.01, 0.03


def _window(size: int, sigma: float | None) -> torch.Tensor:
    """(size,) 1-D window summing to 1: Gaussian with `sigma`, or uniform when sigma is None."""
    if sigma is None:
        return torch.full((size,), 1.0 / size, dtype=torch.float64)
    dist = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    gauss = torch.exp(-((dist / sigma) ** 2) / 2)
    return gauss / gauss.sum()


def blur_matrix(n: int, window: torch.Tensor) -> torch.Tensor:
    """(n, n) matrix B with B @ x = the `window` slid over x reflect-padded to keep n samples.

    A separable 2-D window on (H, W) images is then B_h @ X @ B_w.T: two small
    matrix products instead of a convolution with the whole window.
    """
    pad = (len(window) - 1) // 2
    source = torch.arange(-pad, n + pad).abs()  # reflection without repeating the edge
    source = torch.where(source > n - 1, 2 * (n - 1) - source, source)
    blur = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        blur[i].index_add_(0, source[i : i + len(window)], window)
    return blur


def ssim_per_image(recon: torch.Tensor, target: torch.Tensor, chunk: int = 2000) -> torch.Tensor:
    """(N,) SSIM of each image: 11x11 Gaussian window, sigma 1.5, data range 1 (torchmetrics' values).

    Images are (N, H, W) or (N, C, H, W); computed in float32 (as torchmetrics does on float32
    images), in chunks to bound memory. Images smaller than 11 pixels a side use a uniform
    window as large as fits (tiny test tensors).
    """
    if recon.dim() == 3:
        recon, target = recon.unsqueeze(1), target.unsqueeze(1)
    height, width = recon.shape[-2:]
    side = min(height, width)
    size, sigma = (SSIM_WINDOW, SSIM_SIGMA) if side >= SSIM_WINDOW else (side - (1 - side % 2), None)
    window = _window(size, sigma)
    rows, cols = blur_matrix(height, window).float(), blur_matrix(width, window).float().T
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    out = []
    for i in range(0, len(recon), chunk):
        x, y = recon[i : i + chunk].float(), target[i : i + chunk].float()  # (n, C, H, W)
        mu_x, mu_y, xx, yy, xy = (rows @ m @ cols for m in (x, y, x * x, y * y, x * y))
        var_x = (xx - mu_x * mu_x).clamp_min(0.0)
        var_y = (yy - mu_y * mu_y).clamp_min(0.0)
        cov = xy - mu_x * mu_y
        ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
            (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
        )
        out.append(ssim_map.flatten(1).double().mean(1))
    return torch.cat(out)


def reconstruction_metrics(
    recon: torch.Tensor, target: torch.Tensor, labels: torch.Tensor
) -> tuple[dict[str, float], dict[str, dict[str, float]], torch.Tensor]:
    """Overall metrics, the same metrics per label, and the (N,) squared error per image."""
    recon, target = recon.detach().cpu(), target.detach().cpu()
    sq = sq_err_per_image(recon.double(), target.double())
    bce = bce_per_image(recon.double(), target.double())
    ssim = ssim_per_image(recon, target)
    return _by_label(sq, bce, ssim, labels, target[0].numel(), lambda mask: psnr(recon[mask], target[mask]))


@torch.no_grad()
def reconstruction_metrics_batched(
    reconstruct: Callable[[torch.Tensor], torch.Tensor],
    images,
    labels: torch.Tensor,
    batch: int | None = None,
) -> tuple[dict[str, float], dict[str, dict[str, float]], torch.Tensor]:
    """`reconstruction_metrics(reconstruct(x), x, labels)` for x the float images of uint8
    `images` (a memory map is fine), computed batch by batch: the floats of one batch exist at a
    time, and only per-image figures are kept.

    Every per-image figure (squared error, BCE, SSIM) equals the whole-split one; PSNR is
    10 log10(1 / MSE) with the MSE summed from the per-image squared errors instead of over all
    pixels at once, so it can differ from `reconstruction_metrics`' in the last bits."""
    from aeflow.evaluation.streaming import Gather, float_batches, pixels_of

    sq, bce, ssim = (Gather(len(images)) for _ in range(3))
    for x in float_batches(images, batch):
        recon = reconstruct(x).reshape(x.shape).detach().cpu()
        recon64, x64 = recon.double(), x.double()
        sq.add(sq_err_per_image(recon64, x64))
        bce.add(bce_per_image(recon64, x64))
        del recon64, x64  # before SSIM's temporaries: the heap reuses their space
        ssim.add(ssim_per_image(recon, x))
    sq, bce, ssim = sq.result(), bce.result(), ssim.result()
    pixels = pixels_of(images)

    def psnr_of(mask: torch.Tensor | slice) -> float:
        chosen = sq[mask]
        return float(10.0 * torch.log10(1.0 / (chosen.sum() / (len(chosen) * pixels))))

    return _by_label(sq, bce, ssim, labels, pixels, psnr_of)


def _by_label(
    sq: torch.Tensor,
    bce: torch.Tensor,
    ssim: torch.Tensor,
    labels: torch.Tensor,
    pixels: int,
    psnr_of: Callable[[torch.Tensor | slice], float],
) -> tuple[dict[str, float], dict[str, dict[str, float]], torch.Tensor]:
    """The summaries of per-image figures of images of `pixels` values, overall and per label;
    `psnr_of(mask)`: the PSNR."""

    def summarise(mask: torch.Tensor | slice) -> dict[str, float]:
        return {
            SQ_ERR: float(sq[mask].mean()),
            MSE: float(sq[mask].mean() / pixels),
            BCE: float(bce[mask].mean()),
            PSNR: psnr_of(mask),
            SSIM: float(ssim[mask].mean()),
        }

    labels = labels.cpu()
    by_label = {
        str(int(c)): {**summarise(labels == c), "count": int((labels == c).sum())} for c in labels.unique()
    }
    return summarise(slice(None)), by_label, sq


# --- feature quality: probes on codes -------------------------------------------------------------


def knn_predict(
    train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, k: int = 5, chunk: int = 1000
) -> torch.Tensor:
    """(M,) majority label among the k nearest training points (Euclidean); ties go to the nearer."""
    train_x, test_x = train_x.float().flatten(1), test_x.float().flatten(1)
    k = min(k, len(train_x))
    classes = int(train_y.max()) + 1
    train_sq = train_x.pow(2).sum(1)
    # Vote weight 1 + tiny bonus for rank: equal counts are decided by the nearest neighbour.
    weights = 1.0 + 1e-3 * torch.arange(k, 0, -1, dtype=torch.float32)
    preds = []
    for start in range(0, len(test_x), chunk):
        q = test_x[start : start + chunk]
        dist = train_sq - 2.0 * q @ train_x.T  # + |q|^2, constant per row
        nearest = dist.topk(k, dim=1, largest=False).indices  # (m, k), nearest first
        votes = torch.zeros(len(q), classes).scatter_add_(1, train_y[nearest], weights.expand(len(q), k))
        preds.append(votes.argmax(1))
    return torch.cat(preds)


def knn_accuracy(train_x, train_y, test_x, test_y, k: int = 5) -> float:
    return float((knn_predict(train_x, train_y, test_x, k) == test_y).double().mean())


def logreg_accuracy(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    max_iter: int = 100,
    l2: float = 1e-4,
) -> float:
    """Test accuracy of a multinomial logistic regression fitted on standardised training features
    (`logreg_classifier`)."""
    return float((logreg_classifier(train_x, train_y, max_iter, l2)(test_x) == test_y).double().mean())


def logreg_classifier(
    train_x: torch.Tensor, train_y: torch.Tensor, max_iter: int = 100, l2: float = 1e-4
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Multinomial logistic regression fitted on standardised training features; returns the
    (M,) predicted label of features (M, ...), so a test set can be predicted batch by batch.

    Full-batch L-BFGS with a small L2 penalty; deterministic for given inputs.
    """
    train_x = train_x.float().flatten(1)
    mean, std = train_x.mean(0), train_x.std(0)
    std = torch.where(std > 1e-3, std, torch.ones_like(std))  # constant features (blank pixels)
    train_x = (train_x - mean) / std
    classes = int(train_y.max()) + 1
    weight = torch.zeros(train_x.shape[1], classes, requires_grad=True)
    bias = torch.zeros(classes, requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(train_x @ weight + bias, train_y) + l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)

    @torch.no_grad()
    def predict(x: torch.Tensor) -> torch.Tensor:
        return (((x.float().flatten(1) - mean) / std) @ weight + bias).argmax(1)

    return predict


# --- compression: quantised codes -----------------------------------------------------------------


class Int8Quantizer:
    """Per-dimension affine 8-bit quantisation: [lo, hi] of each code unit onto 0..255.

    `lo`/`hi` are fitted once on training codes (stored with the decoder, not
    per image), so a code costs one byte per dimension.
    """

    LEVELS = 255

    def fit(self, codes: torch.Tensor) -> Int8Quantizer:
        self.lo, hi = codes.min(0).values.double(), codes.max(0).values.double()
        self.scale = ((hi - self.lo) / self.LEVELS).clamp_min(1e-12)
        return self

    def quantize(self, codes: torch.Tensor) -> torch.Tensor:
        q = ((codes.double() - self.lo) / self.scale).round().clamp(0, self.LEVELS)
        return q.to(torch.uint8)

    def dequantize(self, q: torch.Tensor) -> torch.Tensor:
        return q.double() * self.scale + self.lo


def float16_roundtrip(codes: torch.Tensor) -> torch.Tensor:
    return codes.half().to(codes.dtype)


def code_bytes(code_size: int, pixels: int) -> dict[str, float]:
    """Bytes per image of a code stored as float32/float16/8-bit, and of the uint8 image itself."""
    return {
        "code_size": code_size,
        "bytes_pixels_uint8": pixels,
        "bytes_float32": 4 * code_size,
        "bytes_float16": 2 * code_size,
        "bytes_int8": code_size,
        "ratio_int8": round(pixels / code_size, 3),
    }
