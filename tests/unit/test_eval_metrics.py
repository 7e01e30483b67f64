"""Each evaluation metric against a hand-computed value on tiny tensors."""

import math

import pytest
import torch

from aeflow.evaluation import metrics as M


def test_psnr_is_ten_log10_of_one_over_mse_for_data_range_one():
    target = torch.full((3, 1, 4, 4), 0.5, dtype=torch.float64)
    recon = target + 0.1  # MSE 0.01 -> 20 dB
    assert M.psnr(recon, target) == pytest.approx(20.0, abs=1e-6)
    recon = target.clone()
    recon[0, 0, 0, 0] = 0.5 + math.sqrt(0.001 * 48)  # MSE 0.001 over 48 pixels -> 30 dB
    assert M.psnr(recon, target) == pytest.approx(30.0, abs=1e-5)


def test_ssim_of_identical_images_is_one_and_of_constant_images_follows_the_formula():
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    assert M.ssim_per_image(x, x).tolist() == pytest.approx([1.0, 1.0], abs=1e-5)
    # Constant images (no variance): SSIM = (2 mx my + C1) / (mx^2 + my^2 + C1), C1 = (0.01 * 1)^2.
    a, b, c1 = 0.5, 0.25, 1e-4
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    got = M.ssim_per_image(torch.full((3, 16, 16), b), torch.full((3, 16, 16), a))
    assert got.shape == (3,)
    assert got.tolist() == pytest.approx([expected] * 3, abs=1e-5)
    assert expected == pytest.approx(0.80006, abs=1e-5)


def test_reconstruction_metrics_overall_and_per_label():
    target = torch.zeros(2, 1, 2, 2)
    recon = torch.tensor([[[[0.5, 0.0], [0.0, 0.5]]], [[[1.0, 1.0], [1.0, 0.0]]]])
    overall, by_label, sq = M.reconstruction_metrics(recon, target, torch.tensor([3, 7]))
    assert sq.tolist() == [0.5, 3.0]
    assert overall[M.SQ_ERR] == pytest.approx(1.75)
    assert overall[M.MSE] == pytest.approx(1.75 / 4)
    assert overall[M.PSNR] == pytest.approx(10 * math.log10(4 / 1.75))
    assert by_label["3"][M.SQ_ERR] == pytest.approx(0.5) and by_label["3"]["count"] == 1
    assert by_label["7"][M.MSE] == pytest.approx(0.75)
    assert by_label["7"][M.PSNR] == pytest.approx(10 * math.log10(1 / 0.75))


def _two_clusters(n=40, seed=0):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    x = torch.randn(n, 5, generator=gen) * 0.1 + labels[:, None].float() * 5.0
    return x, labels


@pytest.mark.parametrize("probe", [M.knn_accuracy, M.logreg_accuracy])
def test_probes_on_a_separable_toy_set(probe):
    train_x, train_y = _two_clusters(seed=0)
    test_x, test_y = _two_clusters(seed=1)
    assert probe(train_x, train_y, test_x, test_y) == 1.0
    # Half the test labels flipped: exactly half the predictions are wrong.
    flipped = test_y.clone()
    flipped[::2] = 1 - flipped[::2]
    assert probe(train_x, train_y, test_x, flipped) == 0.5


def test_knn_majority_vote_and_nearest_neighbour_tie_break():
    train_x = torch.tensor([[0.0], [1.0], [1.1], [5.0]])
    train_y = torch.tensor([0, 1, 1, 2])
    # k=3 around 0.2: neighbours 0 (label 0), 1.0 and 1.1 (label 1): majority 1.
    assert M.knn_predict(train_x, train_y, torch.tensor([[0.2]]), k=3).tolist() == [1]
    # k=2 around 0.2: one vote each; the nearer (label 0) wins.
    assert M.knn_predict(train_x, train_y, torch.tensor([[0.2]]), k=2).tolist() == [0]
    assert M.knn_predict(train_x, train_y, torch.tensor([[4.0]]), k=1).tolist() == [2]


def test_int8_quantisation_error_on_a_known_case():
    train = torch.tensor([[0.0, -1.0], [1.0, 1.0]])  # ranges [0, 1] and [-1, 1]
    q = M.Int8Quantizer().fit(train)
    assert q.scale.tolist() == pytest.approx([1 / 255, 2 / 255])
    codes = torch.tensor([[0.2, -1.0], [0.21, 1.0], [2.0, 0.0]])
    levels = q.quantize(codes)
    assert levels.dtype == torch.uint8
    # 0.2*255 = 51 exactly; 0.21*255 = 53.55 -> 54; 2.0 is clamped to 255; 0 in [-1,1] -> 127.5 -> 128
    assert levels.tolist() == [[51, 0], [54, 255], [255, 128]]
    back = q.dequantize(levels)
    assert back[1, 0].item() == pytest.approx(54 / 255)
    assert (back[:2] - codes[:2]).abs().max().item() <= 1 / 255 / 2 + 1e-12
    assert back[2, 1].item() == pytest.approx(-1 + 128 * 2 / 255)


def test_float16_roundtrip_and_code_bytes():
    assert M.float16_roundtrip(torch.tensor([1 / 3])).item() == 0.333251953125
    assert M.code_bytes(30, 784) == {
        "code_size": 30,
        "bytes_pixels_uint8": 784,
        "bytes_float32": 120,
        "bytes_float16": 60,
        "bytes_int8": 30,
        "ratio_int8": 26.133,
    }


@pytest.mark.parametrize("shape", [(6, 1, 28, 28), (4, 2, 20, 13), (3, 1, 8, 8), (2, 1, 7, 7)])
def test_ssim_and_psnr_match_torchmetrics_on_random_images(shape):
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    gen = torch.Generator().manual_seed(sum(shape))
    target = torch.rand(*shape, generator=gen)
    # Correlated with the target, as reconstructions are.
    recon = (0.7 * target + 0.3 * torch.rand(*shape, generator=gen)).clamp(0, 1)
    side = min(shape[-2:])
    # Images smaller than the 11x11 window: torchmetrics with the uniform window the project uses there.
    window = {} if side >= 11 else {"gaussian_kernel": False, "kernel_size": side - (1 - side % 2)}
    expected = structural_similarity_index_measure(recon, target, data_range=1.0, reduction="none", **window)
    got = M.ssim_per_image(recon, target)
    assert got.shape == (shape[0],)
    assert torch.allclose(got, expected.double(), atol=2e-6, rtol=0)
    assert not torch.allclose(got, torch.ones_like(got), atol=1e-2)  # a real comparison, not 1 == 1
    # torchmetrics converts the log base in float32: agreement to 1e-5 dB.
    assert M.psnr(recon, target) == pytest.approx(
        float(peak_signal_noise_ratio(recon, target, data_range=1.0)), abs=1e-5
    )
