"""`aeflow-encode`: a folder of PNGs or an .npy array to codes and reconstructions."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from aeflow.data.idx import read_idx
from tests.team.conftest import BIN, MODEL_NAME, run

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_encode_png_folder_from_registry_and_npy_from_checkpoint(team_project, tmp_path):
    project = team_project.path
    images = read_idx(project / "data/raw/t10k-images-idx3-ubyte")[:6]
    folder = tmp_path / "digits"
    folder.mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image, mode="L").save(folder / f"digit{i}.png")
    np.save(tmp_path / "digits.npy", images)

    out = run(
        project,
        str(BIN / "aeflow-encode"),
        str(folder),
        "--model",
        f"models:/{MODEL_NAME}/1",
        "--out",
        str(tmp_path / "from_registry"),
        tracking_uri=team_project.tracking_uri,
    )
    assert "encoded 6 images" in out.stdout
    run(
        project,
        str(BIN / "aeflow-encode"),
        str(tmp_path / "digits.npy"),
        "--checkpoint",
        "models/best.ckpt",
        "--params",
        "params.yaml",
        "--out",
        str(tmp_path / "from_ckpt"),
    )

    a, b = tmp_path / "from_registry", tmp_path / "from_ckpt"
    codes = np.load(a / "codes.npy")
    assert codes.shape == (6, 128)
    # The registered model is the best checkpoint: same codes either way.
    np.testing.assert_allclose(codes, np.load(b / "codes.npy"), rtol=1e-5, atol=1e-6)
    recon = np.load(a / "reconstructions.npy")
    assert recon.shape == (6, 28, 28) and 0 <= recon.min() and recon.max() <= 1
    x = images / 255.0
    assert ((recon - x) ** 2).sum((1, 2)).mean() < (x**2).sum((1, 2)).mean()
    assert (a / "names.txt").read_text().split() == [f"digit{i}" for i in range(6)]
    written = sorted(p.name for p in (a / "reconstructions").iterdir())
    assert written == [f"digit{i}.png" for i in range(6)]
    with Image.open(a / "reconstructions" / "digit0.png") as img:
        assert img.size == (28, 28) and img.mode == "L"


def test_encode_reports_bad_input_without_traceback(team_project, tmp_path):
    shutil.copy(team_project.path / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "in").mkdir()
    proc = run(
        tmp_path,
        str(BIN / "aeflow-encode"),
        str(tmp_path / "in"),
        "--checkpoint",
        str(team_project.path / "models/best.ckpt"),
        "--out",
        str(tmp_path / "out"),
        check=False,
    )
    assert proc.returncode != 0 and "error:" in proc.stderr and "Traceback" not in proc.stderr
