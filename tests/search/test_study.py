"""A small real search on a slice of real MNIST, in this process: pruning, nested MLflow runs, the preset."""

from __future__ import annotations

import dataclasses

import mlflow
import optuna
import pytest
from optuna.trial import TrialState

from aeflow.config.params import compose
from aeflow.config.schema import validate
from aeflow.search.objective import STATE_TAG
from aeflow.search.run import run_search
from aeflow.search.space import SearchSpaceError, load_spec
from tests.search.conftest import tiny_search, write_search

# Prune a trial whose first-epoch val/loss is not the best so far, from the second trial on.
AGGRESSIVE = {"type": "percentile", "percentile": 1.0, "n_startup_trials": 1, "n_warmup_steps": 0}


@pytest.mark.integration
def test_small_search_prunes_logs_nested_runs_and_writes_a_preset(project, mnist_raw):
    spec = load_spec(write_search(project, tiny_search(mnist_raw, pruner=AGGRESSIVE, sampler={"seed": 0})))
    result = run_search(spec, root=project / "searches", conf_dir=project / "conf")

    trials = result.study.get_trials()
    states = [t.state for t in trials]
    assert len(trials) == 4 and TrialState.FAIL not in states, states
    assert states.count(TrialState.PRUNED) >= 1 and states.count(TrialState.COMPLETE) >= 1, states
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert any(len(t.intermediate_values) < 2 for t in pruned)  # stopped before its last epoch

    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("autoencoder").experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1, [r.info.run_name for r in runs]
    parent = parents[0]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == len(runs) - 1 == 4
    by_trial = {int(r.data.tags["aeflow.search.trial"]): r for r in children}
    assert sorted(by_trial) == [0, 1, 2, 3]
    for trial in trials:
        run = by_trial[trial.number]
        assert run.data.tags[STATE_TAG] == trial.state.name
        assert run.info.status == ("KILLED" if trial.state == TrialState.PRUNED else "FINISHED")
        assert run.data.params["optimizer.lr"] == str(trial.params["optimizer.lr"])
    best = result.study.best_trial
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["best_value"] == pytest.approx(best.value)
    assert parent.data.tags["best_trial"] == str(best.number)
    assert by_trial[best.number].data.metrics["best_val_loss"] == pytest.approx(best.value)
    assert parent.data.params["space.optimizer.lr"] == "tag(log, interval(1e-4, 1e-1))"
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    artifacts |= {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert {
        "search_space.yaml",
        "best.json",
        "trials.csv",
        "tiny_best.yaml",
        "plots/optimization_history.png",
        "plots/param_importances.png",
        "plots/parallel_coordinate.png",
    } <= artifacts, artifacts

    # The preset composes and validates to the best trial's config.
    assert result.preset == project / "conf" / "experiment" / "tiny_best.yaml"
    cfg = compose(["experiment=tiny_best"], conf_dir=project / "conf")
    validate(cfg)
    assert cfg.optimizer.lr == best.params["optimizer.lr"]
    assert cfg.model.latent_dim == best.params["model.latent_dim"]
    assert cfg.trainer.max_epochs == 2 and cfg.paths.checkpoints == "models"
    # Each trial wrote under its own folder, never to the pipeline's outputs.
    assert sorted(p.name for p in (project / "searches" / "tiny").glob("trial-*")) == [
        f"trial-{n:04d}" for n in range(4)
    ]
    assert not (project / "models").exists()

    # Restarted with a larger budget: the finished trials stay, one more runs.
    before = {t.number: (t.state, t.value) for t in trials}
    again = run_search(
        dataclasses.replace(spec, n_trials=5), root=project / "searches", conf_dir=project / "conf"
    )
    after = again.study.get_trials()
    assert len(after) == 5 and {t.number: (t.state, t.value) for t in after[:4]} == before

    # Another search space under the same study name is refused, before any trial.
    changed = load_spec(
        write_search(
            project,
            tiny_search(mnist_raw, space={"optimizer.lr": "tag(log, interval(1e-3, 1e-1))"}),
            name="changed.yaml",
        )
    )
    with pytest.raises(SearchSpaceError, match="was started with another search space"):
        run_search(
            dataclasses.replace(changed, study="tiny"), root=project / "searches", conf_dir=project / "conf"
        )
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(project / "searches" / "tiny.journal"))
    )
    assert len(optuna.load_study(study_name="tiny", storage=storage).trials) == 5
