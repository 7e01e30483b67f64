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
            {"space": {"model.encoder.nrom": "choice(none, layer)"}},
            "space.model.encoder.nrom: unknown config key; did you mean model.encoder.norm",
        ),
        ({"space": {"optimizer.lr": "tag(log, interval(1e-2, 1e-4))"}}, "space.optimizer.lr: empty range"),
        (
            {"space": {"model.latent_dim": "tag(int, interval(16, 16))"}},
            "space.model.latent_dim: empty range",
        ),
        ({"space": {"model.latent_dim": "range(16, 17)"}}, "space.model.latent_dim: empty range"),
        ({"space": {"model.latent_dim": "choice()"}}, "space.model.latent_dim: cannot read 'choice()'"),
        ({"space": {"optimizer.lr": "tag(log, interval(0, 1e-2))"}}, "a log interval must be above 0"),
        ({"space": {"optimizer.lr": "between 1 and 2"}}, "'between 1 and 2' is one value, not a range"),
        ({"space": {"optimizer.lr": "interval(1e-3"}}, "cannot read 'interval(1e-3'"),
        (
            {"space": {"optimizer.lr": "log-uniform 1e-4..1e-2"}},
            "is the old range syntax; write it in Hydra's sweep grammar: tag(log, interval(1e-4, 1e-2))",
        ),
        (
            {"space": {"model.encoder.norm": "choice(none, group)"}},
            "model.encoder.norm=group: invalid config: model.encoder.norm='group': allowed: ",
        ),
        (
            {"space": {"model.latent_dim": "range(0, 9)"}},
            "model.latent_dim=0: invalid config: model.latent_dim=0",
        ),
        (
            {"space": {"trainer.max_epochs": "range(1, 6)"}},
            "space.trainer.max_epochs: set by the search itself",
        ),
        ({"space": {"model.loss": "choice(mse, bce)"}}, "space.model.loss: changes what val/loss measures"),
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


def test_sweeps_parse_to_optuna_values_and_hydra_overrides():
    lr = parse_dimension("optimizer.lr", "tag(log, interval(1e-4, 1e-2))")
    assert (lr.kind, lr.low, lr.high, lr.log) == ("float", 1e-4, 1e-2, True)
    assert lr.override(0.001) == "optimizer.lr=0.001"
    pct = parse_dimension("scheduler.lr_scheduler.pct_start", "interval(0.1, 0.5)")
    assert (pct.kind, pct.low, pct.high, pct.log) == ("float", 0.1, 0.5, False)
    size = parse_dimension("data.batch_size", "range(64, 257, 64)")  # the stop is excluded, as in Hydra
    assert (size.kind, size.low, size.high, size.step) == ("int", 64, 256, 64)
    width = parse_dimension("model.latent_dim", "tag(int, interval(8, 64))")
    assert (width.kind, width.low, width.high) == ("int", 8, 64)
    hidden = parse_dimension("model.encoder.hidden", "choice([500, 250], [100], none, 16, 0.5, true)")
    assert hidden.choices == ("[500,250]", "[100]", "none", 16, 0.5, True)
    assert hidden.override("[100]") == "model.encoder.hidden=[100]"
    assert hidden.override(16) == "model.encoder.hidden=16"
    with pytest.raises(SearchSpaceError, match="lists a value twice"):
        parse_dimension("model.latent_dim", "choice(8, 8)")
    with pytest.raises(SearchSpaceError, match="an int interval needs integer bounds"):
        parse_dimension("model.latent_dim", "tag(int, interval(1.5, 8))")
    with pytest.raises(SearchSpaceError, match=r"unknown tag\(s\) \['fast'\]"):
        parse_dimension("model.latent_dim", "tag(fast, interval(1, 8))")


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("log-uniform 3e-4..3e-2", "tag(log, interval(3e-4, 3e-2))"),
        ("uniform 0.1..0.5", "interval(0.1, 0.5)"),
        ("int 16..64", "tag(int, interval(16, 64))"),
        ("int 64..256 step 64", "range(64, 257, 64)"),
        ("choice none, batch, layer", "choice(none, batch, layer)"),
    ],
)
def test_old_range_syntax_is_refused_naming_the_sweep_that_replaces_it(old, new):
    with pytest.raises(SearchSpaceError, match="old range syntax") as err:
        parse_dimension("k", old)
    assert str(err.value).endswith(new)
    assert parse_dimension("k", new)  # what the message says parses


def test_preset_composes_to_the_trial_config_with_group_choices_and_lists(project):
    spec = load_spec(
        write_search(
            project,
            tiny_search(
                project / "data",
                base=["experiment=hinton2006", "data.batch_size=64"],
                space={
                    "optimizer": "choice(adam, sgd)",
                    "model.encoder.hidden": "choice([500, 250], [100])",
                    "optimizer.lr": "tag(log, interval(1e-4, 1e-2))",
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
