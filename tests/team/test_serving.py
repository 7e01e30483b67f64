"""`mlflow models serve` on a registered version answers encode and reconstruct requests."""

from __future__ import annotations

import json
import urllib.request

import mlflow
import numpy as np
import pytest

from aeflow.data.idx import read_idx
from tests.team.conftest import MODEL_NAME, serve_model, stop_server

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as resp:  # noqa: S310 (127.0.0.1)
        return json.loads(resp.read())


def test_served_model_encodes_and_reconstructs(team_project, tracking_server, tmp_path):
    images = read_idx(team_project.path / "data/raw/t10k-images-idx3-ubyte")[:5]
    x = images.reshape(5, -1).astype(np.float32) / 255.0
    server = serve_model(f"models:/{MODEL_NAME}/1", tmp_path, tracking_server.url)
    try:
        url = server.url + "/invocations"
        codes = np.asarray(_post(url, {"inputs": x.tolist(), "params": {"output": "code"}})["predictions"])
        recon = np.asarray(
            _post(url, {"inputs": x.tolist(), "params": {"output": "reconstruction"}})["predictions"]
        )
        default = np.asarray(_post(url, {"inputs": x.tolist()})["predictions"])
    finally:
        stop_server(server)
    assert codes.shape == (5, 128) and recon.shape == (5, 784)
    np.testing.assert_allclose(default, recon)
    # The same answers as the model loaded in-process from the registry.
    mlflow.set_tracking_uri(tracking_server.url)
    local = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}/1")
    np.testing.assert_allclose(codes, local.predict(x, params={"output": "code"}), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(recon, local.predict(x), rtol=1e-5, atol=1e-6)
    # A trained autoencoder: reconstructions are closer to the input than a blank image is.
    assert ((recon - x) ** 2).sum(1).mean() < (x**2).sum(1).mean()
