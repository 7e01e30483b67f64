"""Search files: parsing, and every bad search space refused before any storage, run or training."""

from __future__ import annotations

from pathlib import Path

import pytest

from aeflow.config.params import compose
from aeflow.config.schema import validate
from aeflow.search.results import preset_text
from aeflow.search.run import run_search
from aeflow.search.space import SearchSpaceError, load_spec, parse_dimension
from tests.conftest import REPO
from tests.search.conftest import tiny_search, write_search


def start(project: Path, spec: dict):
    return run_search(
        load_spec(write_search(project, spec)), root=project / "searches", conf_dir=project / "conf"
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"space": {"model.encoder.nrom": "choice none, layer"}},
            "space.model.encoder.nrom: unknown config key; did you mean model.encoder.norm",
        ),
        ({"space": {"optimizer.lr": "log-uniform 1e-2..1e-4"}}, "space.optimizer.lr: empty range"),
        ({"space": {"model.latent_dim": "int 16..16"}}, "space.model.latent_dim: empty range"),
        ({"space": {"model.latent_dim": "choice"}}, "space.model.latent_dim: empty range"),
        ({"space": {"optimizer.lr": "log-uniform 0..1e-2"}}, "a log-uniform range must be above 0"),
        ({"space": {"optimizer.lr": "between 1 and 2"}}, "cannot read 'between 1 and 2'; write one of"),
        (
            {"space": {"model.encoder.norm": "choice none, group"}},
            "model.encoder.norm=group: invalid config: model.encoder.norm='group': allowed: ",
        ),
        (
            {"space": {"model.latent_dim": "int 0..8"}},
            "model.latent_dim=0: invalid config: model.latent_dim=0",
        ),
        ({"space": {"trainer.max_epochs": "int 1..5"}}, "space.trainer.max_epochs: set by the search itself"),
        ({"space": {"model.loss": "choice mse, bce"}}, "space.model.loss: changes what val/loss measures"),
        ({"objective": {"metric": "val/accuracy"}}, "'val/accuracy': not a metric training logs"),
        ({"objective": {"metric": "test.sq_err_per_image"}}, "a test-set metric"),
        ({"objective": {"metric": "test/loss"}}, "a test-set metric"),
        ({"objective": {"metric": "val/loss", "direction": "maximize"}}, "objective.direction='maximize'"),
        (
            {"pruner": {"type": "sometimes"}},
            "pruner.type='sometimes': allowed: median, percentile, hyperband",
        ),
        ({"pruner": {"type": "median", "patience": 3}}, "pruner (median): unknown setting(s) ['patience']"),
        ({"budget": {"epochs": 0}}, "budget.epochs=0: must be a positive integer"),
        ({"base": ["experiment=nonexistent"]}, "the config does not compose"),
        ({"spaces": {}}, "unknown key(s) ['spaces']"),
    ],
)
def test_bad_search_space_fails_before_any_training(project, tmp_path, change, message):
    with pytest.raises(SearchSpaceError) as err:
        start(project, tiny_search(tmp_path / "no-data", **change))
    assert message in str(err.value)
    assert not (project / "searches").exists()  # no storage, no trial folder
    assert not (project / "mlflow.db").exists()  # no MLflow run


def test_ranges_parse_to_optuna_values_and_hydra_overrides():
    lr = parse_dimension("optimizer.lr", "log-uniform 1e-4..1e-2")
    assert (lr.kind, lr.low, lr.high) == ("log-uniform", 1e-4, 1e-2)
    assert lr.override(0.001) == "optimizer.lr=0.001"
    size = parse_dimension("data.batch_size", "int 64..256 step 64")
    assert (size.low, size.high, size.step) == (64, 256, 64)
    hidden = parse_dimension("model.encoder.hidden", "choice [500, 250], [100], none, 16, 0.5, null")
    assert hidden.choices == ("[500, 250]", "[100]", "none", 16, 0.5, None)
    assert hidden.override("[100]") == "model.encoder.hidden=[100]"
    assert hidden.override(None) == "model.encoder.hidden=null"
    with pytest.raises(SearchSpaceError, match="lists a value twice"):
        parse_dimension("model.latent_dim", "choice 8, 8")
    with pytest.raises(SearchSpaceError, match="int ranges need integer bounds"):
        parse_dimension("model.latent_dim", "int 1.5..8")


def test_preset_composes_to_the_trial_config_with_group_choices_and_lists(project):
    spec = load_spec(
        write_search(
            project,
            tiny_search(
                project / "data",
                base=["experiment=hinton2006", "data.batch_size=64"],
                space={
                    "optimizer": "choice adam, sgd",
                    "model.encoder.hidden": "choice [500, 250], [100]",
                    "optimizer.lr": "log-uniform 1e-4..1e-2",
                },
            ),
        )
    )
    spec.check(project / "conf")
    params = {"optimizer": "sgd", "model.encoder.hidden": "[100]", "optimizer.lr": 0.004}
    preset = project / "conf" / "experiment" / "x_best.yaml"
    preset.write_text(preset_text(spec, params, project / "conf"))
    composed = compose(["experiment=x_best"], conf_dir=project / "conf")
    validate(composed)
    assert composed == compose(spec.overrides(params), conf_dir=project / "conf")
    assert composed.optimizer._target_ == "torch.optim.SGD" and composed.optimizer.lr == 0.004
    assert list(composed.model.encoder.hidden) == [100] and composed.model.latent_dim == 30  # hinton2006's
    assert composed.trainer.max_epochs == 2


@pytest.mark.parametrize("path", sorted((REPO / "conf" / "search").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_search_files_compose_and_validate(path):
    spec = load_spec(path)
    spec.check(REPO / "conf")
    assert spec.metric.startswith("val/")


def test_storage_is_a_journal_file_by_default_else_the_rdb_url_given(tmp_path, monkeypatch):
    from optuna.storages import RDBStorage
    from optuna.storages.journal import JournalStorage

    from aeflow.search.storage import STORAGE_ENV, open_storage

    monkeypatch.delenv(STORAGE_ENV, raising=False)
    assert isinstance(open_storage("s", root=tmp_path), JournalStorage)
    assert (tmp_path / "s.journal").is_file()
    monkeypatch.setenv(STORAGE_ENV, f"sqlite:///{tmp_path / 'env.db'}")
    storage = open_storage("s", root=tmp_path)
    assert isinstance(storage, RDBStorage) and storage.get_heartbeat_interval() is not None
    assert (tmp_path / "env.db").is_file()
    assert isinstance(open_storage("s", str(tmp_path / "other.journal"), root=tmp_path), JournalStorage)
    assert (tmp_path / "other.journal").is_file()
