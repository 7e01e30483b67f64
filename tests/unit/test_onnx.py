"""The ONNX export: ONNX Runtime gives PyTorch's codes, reconstructions and anomaly scores."""

import pytest
import torch

from aeflow.evaluation.anomaly import MODEL_SCORES, as_float, fit_detector
from aeflow.serving.onnx_export import OnnxAutoencoder, export
from tests.conftest import make_synthetic_idx

pytest.importorskip("onnxruntime")


def _network(model: str):
    from aeflow.config.instantiate import instantiate_network
    from aeflow.config.params import compose

    torch.manual_seed(0)
    return instantiate_network(compose([f"experiment={model}"])).eval()


@pytest.mark.parametrize("model", ["tutorial", "conv"])
def test_onnx_runtime_matches_pytorch_within_1e_5(tmp_path, model):
    from aeflow.data.idx import read_idx

    files = make_synthetic_idx(tmp_path / "data", n_train=200, n_test=300)
    test = as_float(torch.from_numpy(read_idx(tmp_path / "data" / files["test_images"]["file"]).copy()))
    train = as_float(torch.from_numpy(read_idx(tmp_path / "data" / files["train_images"]["file"]).copy()))
    net = _network(model)
    folder = export(net, tmp_path / "onnx")
    assert sorted(p.name for p in folder.iterdir()) == ["decoder.onnx", "encoder.onnx"]
    ort = OnnxAutoencoder(tmp_path / "onnx", threads=1)
    with torch.no_grad():
        codes, recon = net.encode(test), net.decode(net.encode(test))
    # Any batch size (the batch dimension is dynamic), the same numbers.
    for batch in (1, 7, 300):
        torch.testing.assert_close(ort.encode(test[:batch]), codes[:batch], rtol=0, atol=1e-5)
        torch.testing.assert_close(ort.decode(codes[:batch]), recon[:batch], rtol=0, atol=1e-5)
    detector = fit_detector(net.encode, net.decode, train, train[:100], quantile=0.9)
    for score in MODEL_SCORES:
        ours = detector.scores(net.encode, net.decode, test, score)
        theirs = detector.scores(ort.encode, ort.decode, test, score)
        # The Mahalanobis distance multiplies the codes' float32 rounding (~1e-7) by the precision
        # matrix, whose largest eigenvalues are large for an untrained network's collinear codes.
        rtol = 1e-4 if score == "mahalanobis" else 1e-5
        torch.testing.assert_close(theirs, ours, rtol=rtol, atol=1e-5)
