"""Bad config fails the real train stage entry point before any training, and creates no MLflow run."""

from __future__ import annotations

import pytest

from tests.reliability.conftest import TINY, run_stage, store_runs, write_params


def _misspelt_key(cfg):
    cfg.model.latnt_dim = 3  # a typo a user could make when editing conf/ by hand


CASES = {
    # name: (overrides, edit, words the message must contain)
    "unknown model": (
        ["model._target_=aeflow.models.autoencoder.Transformer"],
        None,
        ["model._target_", "Transformer", "allowed", "aeflow.models.autoencoder.Autoencoder"],
    ),
    "unknown optimizer": (
        ["optimizer._target_=torch.optim.Adagrad"],
        None,
        ["optimizer._target_", "Adagrad", "allowed", "torch.optim.Adam"],
    ),
    "negative lr": (["optimizer.lr=-0.01"], None, ["optimizer.lr", "-0.01", "positive"]),
    "zero latent_dim": (["model.latent_dim=0"], None, ["model.latent_dim", "0", "positive"]),
    "batch larger than data": (["data.batch_size=5000"], None, ["data.batch_size", "5000", "at most 100"]),
    "misspelt key": ([], _misspelt_key, ["model.latnt_dim", "unknown key", "allowed", "latent_dim"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_config_fails_before_training_with_a_clear_message(case, tiny_data, tmp_path):
    overrides, edit, words = CASES[case]
    folder, files = tiny_data
    write_params(tmp_path, [*TINY, *overrides], folder, files, edit=edit)
    proc = run_stage(tmp_path)
    assert proc.returncode != 0
    message = proc.stderr.strip().splitlines()[-1]
    assert message.startswith("error: "), proc.stderr[-2000:]  # a clean message, not a traceback
    for word in words:
        assert word in message, (word, message)
    assert "Traceback" not in proc.stderr
    assert store_runs(tmp_path / "mlflow.db") == []
    assert not (tmp_path / "models").exists() and not (tmp_path / ".resume").exists()
