"""Reconstruction, probe and compression metrics. Images are (N, ...) tensors with pixels in [0, 1].

Metric names live here so the evaluate stage, the JSON files, MLflow, the
report and the tests spell them once.
"""

from __future__ import annotations

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
    """PSNR in dB over all pixels of all images (torchmetrics, data range 1): 10 log10(1 / MSE)."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    return float(peak_signal_noise_ratio(recon.double(), target.double(), data_range=1.0))


def ssim_per_image(recon: torch.Tensor, target: torch.Tensor, chunk: int = 2000) -> torch.Tensor:
    """(N,) SSIM of each image (torchmetrics: 11x11 Gaussian window, sigma 1.5, data range 1).

    Images are (N, H, W) or (N, C, H, W); computed in chunks to bound memory. Images smaller
    than 11 pixels a side use a uniform window as large as fits (tiny test tensors).
    """
    from torchmetrics.functional.image import structural_similarity_index_measure as ssim

    if recon.dim() == 3:
        recon, target = recon.unsqueeze(1), target.unsqueeze(1)
    side = min(recon.shape[-2:])
    # Images smaller than the 11x11 Gaussian window: a uniform window as large as fits.
    window = {} if side >= 11 else {"gaussian_kernel": False, "kernel_size": side - (1 - side % 2)}
    out = [
        ssim(
            recon[i : i + chunk].float(),
            target[i : i + chunk].float(),
            data_range=1.0,
            reduction="none",
            **window,
        )
        for i in range(0, len(recon), chunk)
    ]
    return torch.cat(out).double()


def reconstruction_metrics(
    recon: torch.Tensor, target: torch.Tensor, labels: torch.Tensor
) -> tuple[dict[str, float], dict[str, dict[str, float]], torch.Tensor]:
    """Overall metrics, the same metrics per label, and the (N,) squared error per image."""
    recon, target = recon.detach().cpu(), target.detach().cpu()
    sq = sq_err_per_image(recon.double(), target.double())
    bce = bce_per_image(recon.double(), target.double())
    ssim = ssim_per_image(recon, target)
    pixels = target[0].numel()

    def summarise(mask: torch.Tensor | slice) -> dict[str, float]:
        return {
            SQ_ERR: float(sq[mask].mean()),
            MSE: float(sq[mask].mean() / pixels),
            BCE: float(bce[mask].mean()),
            PSNR: psnr(recon[mask], target[mask]),
            SSIM: float(ssim[mask].mean()),
        }

    labels = labels.cpu()
    by_label = {
        str(int(c)): {**summarise(labels == c), "count": int((labels == c).sum())} for c in labels.unique()
    }
    return summarise(slice(None)), by_label, sq


class ReconstructionMeter:
    """Accumulates per-image errors over batches; `summary()` gives the metrics dict."""

    def __init__(self) -> None:
        self.sq_err: list[torch.Tensor] = []
        self.bce: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []
        self.pixels = 0

    def update(self, recon: torch.Tensor, target: torch.Tensor, labels: torch.Tensor) -> None:
        recon, target = recon.detach().double().cpu(), target.detach().double().cpu()
        self.pixels = target[0].numel()
        self.sq_err.append(sq_err_per_image(recon, target))
        self.bce.append(bce_per_image(recon, target))
        self.labels.append(labels.cpu())

    def per_image(self) -> torch.Tensor:
        return torch.cat(self.sq_err)

    def summary(self) -> dict:
        sq, bce, labels = self.per_image(), torch.cat(self.bce), torch.cat(self.labels)
        by_digit = {str(int(c)): float(sq[labels == c].mean()) for c in labels.unique()}
        return {
            SQ_ERR: float(sq.mean()),
            MSE: float(sq.mean() / self.pixels),
            BCE: float(bce.mean()),
            BY_DIGIT: by_digit,
        }


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
    """Test accuracy of a multinomial logistic regression fitted on standardised training features.

    Full-batch L-BFGS with a small L2 penalty; deterministic for given inputs.
    """
    train_x, test_x = train_x.float().flatten(1), test_x.float().flatten(1)
    mean, std = train_x.mean(0), train_x.std(0)
    std = torch.where(std > 1e-3, std, torch.ones_like(std))  # constant features (blank pixels)
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
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
    with torch.no_grad():
        return float(((test_x @ weight + bias).argmax(1) == test_y).double().mean())


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
