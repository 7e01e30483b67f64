import pytest
import torch

from aeflow.evaluation.metrics import (
    MSE,
    SQ_ERR,
    bce_per_image,
    reconstruction_metrics,
    sq_err_per_image,
)
from aeflow.evaluation.pca import PCA


def test_sq_err_per_image_hand_computed():
    target = torch.zeros(2, 1, 2, 2)
    recon = torch.tensor([[[[0.5, 0.0], [0.0, 0.5]]], [[[1.0, 1.0], [1.0, 0.0]]]])
    # image 0: 0.25 + 0.25 = 0.5; image 1: 1 + 1 + 1 = 3
    assert sq_err_per_image(recon, target).tolist() == [0.5, 3.0]


def test_summary_mean_mse_and_per_digit():
    target = torch.zeros(2, 1, 2, 2)
    recon = torch.tensor([[[[0.5, 0.0], [0.0, 0.5]]], [[[1.0, 1.0], [1.0, 0.0]]]])
    summary, by_digit, _ = reconstruction_metrics(recon, target, torch.tensor([3, 7]))
    assert summary[SQ_ERR] == pytest.approx(1.75)
    assert summary[MSE] == pytest.approx(1.75 / 4)
    assert {d: v[SQ_ERR] for d, v in by_digit.items()} == {"3": pytest.approx(0.5), "7": pytest.approx(3.0)}


def test_bce_of_perfect_binary_reconstruction_is_near_zero():
    x = torch.tensor([[0.0, 1.0, 1.0, 0.0]])
    assert bce_per_image(x, x).item() < 1e-5
    assert bce_per_image(torch.full_like(x, 0.5), x).item() == pytest.approx(0.6931, abs=1e-4)


def test_pca_reconstructs_rank_k_data_exactly():
    gen = torch.Generator().manual_seed(0)
    basis = torch.randn(3, 20, generator=gen)
    data = torch.randn(200, 3, generator=gen) @ basis + 5.0  # rank 3 plus an offset
    pca = PCA(3).fit(data)
    assert torch.allclose(pca.decode(pca.encode(data)), data.double(), atol=1e-8)
    assert sq_err_per_image(PCA(2).fit(data).decode(PCA(2).fit(data).encode(data)), data).mean() > 1e-3


def test_pca_rejects_bad_component_count():
    with pytest.raises(ValueError, match="n_components=0"):
        PCA(0).fit(torch.zeros(4, 3))


def test_pca_saved_and_loaded_gives_the_same_projection(tmp_path):
    data = torch.randn(50, 12, generator=torch.Generator().manual_seed(1))
    pca = PCA(4).fit(data)
    pca.write(tmp_path / "pca.npz")
    back = PCA.load(tmp_path / "pca.npz")
    assert back.k == 4
    assert torch.equal(back.encode(data), pca.encode(data)) and torch.equal(
        back.first(2).components, pca.components[:, :2]
    )


def test_one_thread_block_restores_the_thread_count():
    from aeflow.evaluation.pca import one_thread

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with one_thread():
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
