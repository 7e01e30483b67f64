"""Evaluation batch by batch from uint8 splits equals evaluation on the whole split as floats,
and PCA's randomized fit is close to its exact one."""

import zlib

import numpy as np
import pytest
import torch

from aeflow.evaluation import anomaly as A
from aeflow.evaluation import pca as P
from aeflow.evaluation import streaming as S
from aeflow.evaluation.corruptions import CORRUPTIONS, CorruptedImages, corrupt
from aeflow.evaluation.protocols import anomaly_evaluation


def _low_rank_images(n: int, side: int = 12, channels: int = 3, rank: int = 6, seed: int = 0) -> torch.Tensor:
    """uint8 (n, C, side, side) near a `rank`-dimensional subspace plus noise, with a falling
    spectrum: a PCA case with a clear answer."""
    gen = torch.Generator().manual_seed(seed)
    d = channels * side * side
    basis = torch.linalg.qr(torch.randn(d, rank, generator=gen, dtype=torch.float64)).Q
    weights = torch.randn(n, rank, generator=gen, dtype=torch.float64) * torch.linspace(60, 10, rank)
    pixels = 128 + weights @ basis.T * 4 + 3 * torch.randn(n, d, generator=gen, dtype=torch.float64)
    return pixels.round().clamp(0, 255).to(torch.uint8).reshape(n, channels, side, side)


def test_batch_size_follows_the_image_size():
    assert S.rows_per_batch(784) == 2048  # MNIST: the batches evaluation always used
    assert S.rows_per_batch(3 * 64 * 64) == 160
    assert S.rows_per_batch(3 * 256 * 256) == 10
    assert S.rows_per_batch(10**9) == 1


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_a_corrupted_copy_made_batch_by_batch_equals_the_whole_copy(name):
    images = _low_rank_images(70)
    whole = corrupt(images, name, seed=3)
    for size in (16, 32, 70):
        batched = torch.cat(list(CorruptedImages(images, name, seed=3).batches(size)))
        assert torch.equal(batched, whole), (name, size)


def test_impulse_noise_in_batches_draws_the_hits_then_the_salt_of_the_whole_set():
    images = _low_rank_images(40)
    gen = torch.Generator().manual_seed(5 * 1_000_003 + zlib.crc32(b"impulse_noise"))
    hit = torch.rand(images.shape, generator=gen) < 0.1
    salt = torch.rand(images.shape, generator=gen) < 0.5
    expected = images.clone()
    expected[hit] = torch.where(salt[hit], 255, 0).to(torch.uint8)
    batched = torch.cat(list(CorruptedImages(images, "impulse_noise", seed=5).batches(16)))
    assert torch.equal(batched, expected)


def test_impulse_noise_skips_its_salt_draws_in_bounded_chunks_to_the_same_place(monkeypatch):
    # 16 images a skip (the byte budget of 16 images of 3x12x12 in float64) instead of all 40.
    import aeflow.evaluation.corruptions as C

    images = _low_rank_images(40)
    whole = torch.cat(list(CorruptedImages(images, "impulse_noise", seed=5).batches(16)))
    monkeypatch.setattr(C, "SKIP_BYTES", 16 * 8 * S.pixels_of(images))
    chunked = torch.cat(list(CorruptedImages(images, "impulse_noise", seed=5).batches(16)))
    assert torch.equal(chunked, whole)


def test_rows_read_the_selection_batch_by_batch():
    images = _low_rank_images(40)
    mask = torch.arange(40) % 3 == 0
    rows = S.Rows(images, mask)
    assert len(rows) == int(mask.sum())
    assert torch.equal(torch.cat(list(S.batches(rows, 4))), images[mask])


def test_scores_of_uint8_batches_equal_those_of_the_whole_float_split():
    images = _low_rank_images(300)
    pca = P.PCA(5).fit(S.as_float(images).double())

    def encode(x):
        return pca.encode(x).float()

    def decode(z):
        return pca.decode(z).float().clamp(0, 1)

    gaussian = A.CodeGaussian.fit(encode(S.as_float(images)))
    whole = A.model_scores(encode, decode, gaussian, S.as_float(images))
    batched = A.model_scores(encode, decode, gaussian, images, batch=64)
    for name in A.MODEL_SCORES:
        assert torch.equal(whole[name], batched[name]), name
    flat = S.as_float(images).flatten(1).double()
    expected = (pca.decode(pca.encode(flat)) - flat).pow(2).sum(1)
    assert torch.allclose(A.pca_scores(pca, images, batch=64), expected, rtol=1e-12, atol=1e-12)
    fitted = A.fit_detector(encode, decode, images[:200], images[200:], 0.9)
    assert fitted == A.fit_detector(encode, decode, S.as_float(images[:200]), S.as_float(images[200:]), 0.9)


def test_the_protocols_score_memory_mapped_splits_as_whole_float_splits(tmp_path):
    images = _low_rank_images(400, channels=1)[:, 0]  # grey (N, H, W), as MNIST is stored
    labels = torch.arange(400) % 4
    np.save(tmp_path / "images.npy", images.numpy())
    mapped = torch.from_numpy(np.load(tmp_path / "images.npy", mmap_mode="c"))  # a map torch may wrap
    pca = P.fit_images(images[:250], 4)

    class Linear(torch.nn.Module):
        def encode(self, x):
            return pca.encode(x).float()

        def decode(self, z):
            return pca.decode(z).float().clamp(0, 1)

    model, classes = Linear(), [0, 1]
    splits = {"train": (mapped[:250], labels[:250]), "val": (mapped[250:300], labels[250:300])}
    splits["test"] = (mapped[300:], labels[300:])
    found = anomaly_evaluation(
        model, pca, splits, quantile=0.9, corruptions=["rotate", "impulse_noise"], classes=classes
    ).metrics
    # The same figures from whole float copies, as evaluation computed them before it streamed.
    test, test_labels = images[300:].unsqueeze(1), labels[300:]
    normal = test[(test_labels == 0) | (test_labels == 1)]
    gaussian = A.CodeGaussian.fit(model.encode(S.as_float(images[:250])))

    def scores(x):
        return A.model_scores(model.encode, model.decode, gaussian, S.as_float(x))[A.SQ_ERR]

    gen = torch.Generator().manual_seed(zlib.crc32(b"impulse_noise"))  # seed 0's generator
    hit = torch.rand(normal.shape, generator=gen) < 0.1
    salt = torch.rand(normal.shape, generator=gen) < 0.5
    impulse = normal.clone()
    impulse[hit] = torch.where(salt[hit], 255, 0).to(torch.uint8)
    expected = {
        ("shift", "impulse_noise"): A.separation(scores(normal), scores(impulse)),
        ("shift", "rotate"): A.separation(scores(normal), scores(corrupt(normal, "rotate"))),
        ("other_classes", "rest"): A.separation(scores(normal), scores(test[test_labels > 1])),
    }
    for (protocol, name), metrics in expected.items():
        got = found[protocol][name][A.SQ_ERR]
        assert {k: got[k] for k in metrics} == metrics, (protocol, name)


def test_pca_methods_follow_the_rule_and_the_exact_path_is_unchanged():
    assert P.choose_method(55_000, 784) == P.EXACT  # MNIST: the figures it always had
    assert P.choose_method(200_000, 784) == P.COVARIANCE
    assert P.choose_method(100, 64 * 64 * 3) == P.RANDOMIZED
    images = _low_rank_images(200)
    exact = P.fit_images(images, 4)
    old = P.PCA(4).fit(images.double() / 255.0)
    for key in ("mean", "components", "explained_variance"):
        assert torch.equal(getattr(exact, key), getattr(old, key)), key
    with pytest.raises(ValueError, match="method='svd': allowed: auto, exact"):
        P.fit_images(images, 4, method="svd")


@pytest.mark.parametrize("method", [P.COVARIANCE, P.RANDOMIZED])
def test_streamed_pca_captures_the_exact_fits_variance(method):
    images = _low_rank_images(500, seed=1)
    exact = P.fit_images(images, 6, method=P.EXACT)
    fitted = P.fit_images(images, 6, method=method, batch=48)
    assert torch.allclose(fitted.mean, exact.mean, rtol=0, atol=1e-12)
    ratio = float(fitted.explained_variance.sum() / exact.explained_variance.sum())
    assert 0.999 <= ratio <= 1 + 1e-5, ratio  # float32 products: rounding of ~1e-7
    # The same subspace: each exact component lies in the fitted span.
    inside = (fitted.components.T @ exact.components).pow(2).sum(0)
    assert inside.min() > 0.999, inside
    flat = images.flatten(1).double() / 255.0

    def error(p: P.PCA) -> float:
        return float((p.decode(p.encode(flat)) - flat).pow(2).sum(1).mean())

    assert error(fitted) <= error(exact) * 1.001


def test_figures_read_only_the_images_they_draw():
    images = _low_rank_images(30, channels=1)
    picked = S.take(images, [3, 7])
    assert picked.dtype == torch.float32 and picked.shape == (2, 1, 12, 12)
    assert torch.equal(picked, images[[3, 7]].float() / 255.0)


def test_reconstruction_metrics_batch_by_batch_equal_the_whole_splits():
    from aeflow.evaluation import metrics as M

    images = _low_rank_images(90, side=16)
    labels = torch.arange(90) % 3
    pca = P.fit_images(images, 5)

    def reconstruct(x):
        return pca.decode(pca.encode(x)).float().clamp(0, 1)

    x = S.as_float(images)
    whole = M.reconstruction_metrics(reconstruct(x).view_as(x), x, labels)
    batched = M.reconstruction_metrics_batched(reconstruct, images, labels, batch=32)
    assert torch.equal(whole[2], batched[2])
    for got, expected in ((batched[0], whole[0]), *((batched[1][c], whole[1][c]) for c in whole[1])):
        assert got.keys() == expected.keys()
        for key in expected:
            tol = 1e-12 if key == M.PSNR else 0  # PSNR: summed per image, the last bits may differ
            assert got[key] == pytest.approx(expected[key], rel=tol, abs=0), key


def test_the_figures_from_uint8_images_are_those_from_the_float_split(tmp_path):
    from aeflow.config.schema import VisualizeConfig
    from aeflow.reporting.figures import draw_all

    images = _low_rank_images(60, channels=1)[:, 0]  # grey (N, H, W), as a split is stored
    labels = torch.arange(60) % 3
    pca = P.fit_images(images, 4)

    class Linear(torch.nn.Module):
        def encode(self, x):
            return pca.encode(x).float()

        def decode(self, z):
            return pca.decode(z).float().clamp(0, 1).reshape(len(z), 1, 12, 12)

        def forward(self, x):
            return self.decode(self.encode(x))

    worst = [{"index": i, "digit": int(labels[i]), "sq_err_per_image": 1.0} for i in (50, 7, 33)]
    by_digit = {k: {str(c): {"sq_err_per_image": 1.0 + c} for c in range(3)} for k in ("test", "pca")}
    details = {"worst": worst, "by_digit": by_digit}
    knobs = VisualizeConfig(map_points=40, interpolation_pairs=4, interpolation_steps=3)
    loss = [{"epoch": 0, "train/loss": 1.0, "val/loss": 1.1}]
    drawn = {}
    for kind, x in (("uint8", images), ("float", S.as_float(images))):
        (tmp_path / kind).mkdir()
        figures = draw_all(Linear(), pca, x, labels, details, loss, 4, knobs, tmp_path / kind)
        drawn[kind] = {f.path.name: f.path.read_bytes() for f in figures}
    assert drawn["uint8"].keys() == drawn["float"].keys() and len(drawn["uint8"]) == 6
    for name, png in drawn["float"].items():
        assert drawn["uint8"][name] == png, name


def test_gathered_results_are_the_concatenated_parts_bit_for_bit():
    double = torch.float64
    parts = [torch.randn(5, 3, dtype=double), torch.randn(5, 3, dtype=double), torch.randn(2, 3)]
    gathered = S.Gather(12)
    for part in parts:
        gathered.add(part)
    expected = torch.cat([parts[0], parts[1], parts[2].double()])
    assert gathered.result().dtype == torch.float64
    assert torch.equal(gathered.result(), expected)


def test_gather_refuses_too_many_or_too_few_rows_and_gives_the_empty_value_for_none():
    gathered = S.Gather(3)
    gathered.add(torch.zeros(2))
    with pytest.raises(ValueError, match="2 rows gathered, 3 expected"):
        gathered.result()
    with pytest.raises(ValueError, match="more than the 3 rows"):
        gathered.add(torch.zeros(2))
    empty = torch.zeros(0, dtype=torch.float64)
    assert S.Gather(0).result(empty) is empty
