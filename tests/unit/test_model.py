import json
from pathlib import Path

import mlflow
import pytest
import pytorch_lightning as pl
import torch

from aeflow.config.instantiate import instantiate_model
from aeflow.config.params import compose
from aeflow.errors import TrainingError
from aeflow.models.autoencoder import reconstruction_loss
from aeflow.training.train import train

# train() records its MLflow run, which starts processes (git for the commit, `uname -p` for the
# machine): these tests are integration tests, whatever else in this file is a unit test.
THROUGH_MLFLOW = pytest.mark.integration


def test_forward_shapes_and_range():
    model = instantiate_model(compose(["model.latent_dim=5"]))
    x = torch.rand(3, 1, 28, 28)
    assert model.encode(x).shape == (3, 5)
    out = model(x)
    assert out.shape == (3, 1, 28, 28) and 0 <= out.min() and out.max() <= 1


def test_bce_on_logits_matches_bce_on_sigmoid():
    logits, target = torch.randn(4, 10), torch.rand(4, 10)
    expected = torch.nn.functional.binary_cross_entropy(torch.sigmoid(logits), target)
    assert torch.allclose(reconstruction_loss("bce", logits, target), expected, atol=1e-6)
    # Stable where sigmoid saturates: BCE on probabilities would give inf/100-clamped values.
    assert torch.isfinite(reconstruction_loss("bce", torch.tensor([200.0]), torch.tensor([0.0])))
    with pytest.raises(ValueError, match="allowed: \\['mse', 'bce'\\]"):
        reconstruction_loss("l1", logits, target)


def test_few_training_steps_reduce_loss():
    pl.seed_everything(0)
    model = instantiate_model(compose(["optimizer=adam"]))
    x = torch.rand(32, 1, 28, 28)
    opt = model.configure_optimizers()
    losses = []
    for _ in range(5):
        loss = model.training_step((x, torch.zeros(32)), 0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


@THROUGH_MLFLOW
def test_train_writes_checkpoints_metrics_and_one_mlflow_run_and_package_logs_the_model(tiny_cfg):
    from aeflow.serving import package

    result = train(tiny_cfg)
    paths = tiny_cfg.paths
    assert result.best_checkpoint.name == "best.ckpt"
    for name in ("best.ckpt", "last.ckpt"):
        state = torch.load(f"{paths.checkpoints}/{name}", weights_only=True)
        assert "state_dict" in state
    metrics = json.loads(open(paths.train_metrics).read())
    assert metrics["epochs"] == 2 and metrics["val/loss"] > 0
    rows = open(paths.loss_curve).read().splitlines()
    assert rows[0] == "epoch,train/loss,val/loss" and len(rows) == 3
    client = mlflow.MlflowClient(tiny_cfg.mlflow.tracking_uri)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["model.latent_dim"] == "128"
    assert len(client.get_metric_history(result.run_id, "val/loss")) == 2
    assert json.loads(open(paths.run_info).read())["run_id"] == result.run_id
    assert not client.list_artifacts(result.run_id, "model")  # the package stage logs the model
    package.from_config(tiny_cfg)
    loaded = mlflow.pyfunc.load_model(f"runs:/{result.run_id}/model")
    codes = loaded.predict(torch.rand(2, 784).numpy(), params={"output": "code"})
    assert codes.shape == (2, 128)


@THROUGH_MLFLOW
def test_nan_loss_stops_training_and_fails_the_run(tiny_cfg):
    # Linear layers and a huge SGD step: the weights blow up to inf/NaN within a few steps.
    for net in ("encoder", "decoder"):
        tiny_cfg.model[net].activation = "identity"
    tiny_cfg.model.encoder.code_activation = "identity"
    tiny_cfg.model.loss = "bce"
    tiny_cfg.optimizer = {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 1e10}
    with pytest.raises(TrainingError, match=r"loss became (nan|inf).*epoch \d+, step \d+"):
        train(tiny_cfg)
    client = mlflow.MlflowClient(tiny_cfg.mlflow.tracking_uri)
    run_id = json.loads(open(tiny_cfg.paths.run_info).read())["run_id"]
    assert client.get_run(run_id).info.status == "FAILED"


@THROUGH_MLFLOW
def test_training_cut_short_by_max_time_fails_keeps_checkpoints_and_marks_the_run(tiny_cfg):
    # A schedule (one-cycle) cut by max_time gives a model that depends on the machine's speed:
    # it must not pass for the config's result, so the stage fails and publishes nothing.
    tiny_cfg.trainer.max_epochs = 10_000
    tiny_cfg.trainer.max_time = "00:00:00:01"
    with pytest.raises(
        TrainingError,
        match=r"trainer.max_time \(00:00:00:01\) stopped training after \d+ of "
        r"10000 epochs.*lower trainer.max_epochs",
    ) as err:
        train(tiny_cfg)
    assert not Path(tiny_cfg.paths.checkpoints, "best.ckpt").exists()
    assert list(Path(tiny_cfg.paths.resume).rglob("last.ckpt"))
    client = mlflow.MlflowClient(tiny_cfg.mlflow.tracking_uri)
    experiment = client.get_experiment_by_name(tiny_cfg.mlflow.experiment_name)
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_id in str(err.value)
    assert run.info.status == "FAILED" and run.data.tags["aeflow.stopped_by"] == "max_time"


@THROUGH_MLFLOW
def test_training_that_reaches_max_epochs_is_not_reported_cut_short(tiny_cfg, caplog):
    tiny_cfg.trainer.max_time = "00:01:00:00"
    with caplog.at_level("WARNING", logger="aeflow.training.train"):
        result = train(tiny_cfg)
    assert result.metrics["epochs"] == 2
    assert "stopped training after" not in caplog.text
    run = mlflow.MlflowClient(tiny_cfg.mlflow.tracking_uri).get_run(result.run_id)
    assert "aeflow.stopped_by" not in run.data.tags


def test_checkpoint_loads_into_the_plain_network_with_either_key_layout(tiny_cfg, tmp_path):
    from aeflow.models.components import AutoencoderNet
    from aeflow.models.weights import load_weights

    torch.manual_seed(0)
    module = instantiate_model(tiny_cfg)
    state = module.state_dict()
    assert all(key.startswith("net.") for key in state)  # the LightningModule holds the network as `net`
    older = {key.removeprefix("net."): value for key, value in state.items()}  # networks held directly
    x = torch.rand(3, 1, 28, 28)
    for name, layout in (("current", state), ("direct", older)):
        torch.save({"state_dict": layout}, tmp_path / f"{name}.ckpt")
        net = load_weights(tiny_cfg, tmp_path / f"{name}.ckpt")
        assert type(net) is AutoencoderNet and not net.training
        assert torch.equal(net(x), module.eval()(x)) and torch.equal(net.encode(x), module.encode(x))
