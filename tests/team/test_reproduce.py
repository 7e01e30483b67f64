"""`aeflow reproduce RUN_ID` on a real pipeline run (tests/team/reproducing.py), and the lineage
that run records: datasets, MLflow system tags, description, the run id in DVC's metrics. The
verdicts judged by the spread of seeds are in test_reproduce_spread.py."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT, MLFLOW_RUN_NOTE, MLFLOW_SOURCE_NAME

from aeflow.tracking.lineage import CONFIG_ARTIFACT
from aeflow.tracking.reproduce import COMPARISON_ARTIFACT, EXIT_MISMATCH, EXIT_REFUSED
from aeflow.tracking.runs import git_dirty, metric_keys
from tests.conftest import SLICE_SIZES, SLICE_VAL_SIZE
from tests.helpers import run, start_mlflow_server, stop_server
from tests.team.reproducing import (
    TAMPERED,
    copy_run,
    in_clone,
    overrides,
    reproduce,
    reproductions,
    table_rows,
)

pytestmark = pytest.mark.integration


@pytest.mark.slow
def test_the_run_records_its_lineage(original):
    client, run_id = original.client, original.run_id
    run_ = client.get_run(run_id)
    tags = run_.data.tags
    head = run(original.project, "git", "rev-parse", "HEAD").stdout.strip()
    # params.yaml, dvc.lock and the outputs differ from the commit: none of that is dirt.
    assert tags["git_dirty"] == "false" and tags[MLFLOW_GIT_COMMIT] == tags["git_commit"] == head
    assert tags[MLFLOW_SOURCE_NAME] == "aeflow.stages.train"
    sq_err = json.loads((original.project / "metrics/evaluate.json").read_text())["test"]["sq_err_per_image"]
    assert tags[MLFLOW_RUN_NOTE].endswith(f"{sq_err:.4f}") and "mnist" in tags[MLFLOW_RUN_NOTE]
    inputs = {i.dataset.name: i.dataset for i in run_.inputs.dataset_inputs}
    assert set(inputs) == {"mnist-train", "mnist-val", "mnist-test"}
    assert {d.digest for d in inputs.values()} == {tags["data_dvc_md5"]}
    sizes = {name: json.loads(d.profile)["num_images"] for name, d in inputs.items()}
    train, test = SLICE_SIZES["train"], SLICE_SIZES["test"]
    assert sizes == {"mnist-train": train - SLICE_VAL_SIZE, "mnist-val": SLICE_VAL_SIZE, "mnist-test": test}
    assert [a.path for a in client.list_artifacts(run_id, "config")] == [CONFIG_ARTIFACT]
    assert json.loads((original.project / "metrics/train.json").read_text())["mlflow_run_id"] == run_id
    assert run_id in run(original.project, "dvc", "exp", "show", "--json").stdout


@pytest.mark.slow
def test_a_run_is_reproduced_bit_for_bit_from_its_id(original):
    proc = reproduce(original.project, original.run_id)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    print(proc.stdout)  # the table, shown with `pytest -rP`
    rows = table_rows(proc.stdout)
    # Every test metric the evaluate stage writes, and nothing else.
    evaluated = json.loads((original.project / "metrics/evaluate.json").read_text())
    assert set(rows) == set(metric_keys(evaluated)) and len(rows) > 20, proc.stdout
    assert all(cells[2:] == ["0", "yes"] for cells in rows.values()), proc.stdout
    assert "exact: all" in proc.stdout and "same numerics fingerprint" in proc.stdout
    (copy,) = reproductions(original.client, original.run_id)
    assert copy.data.tags["aeflow.reproduced"] == "true"
    # Recomputed, not restored: a run of its own that trained, with its own loss history.
    assert copy.info.run_id != original.run_id
    history = original.client.get_metric_history(copy.info.run_id, "train/loss")
    assert history and all(m.timestamp >= copy.info.start_time for m in history)
    assert (
        copy.data.tags["aeflow.numerics.hash"]
        == original.client.get_run(original.run_id).data.tags["aeflow.numerics.hash"]
    )
    assert copy.data.tags["git_commit"] == original.client.get_run(original.run_id).data.tags["git_commit"]
    comparison = original.client.download_artifacts(copy.info.run_id, COMPARISON_ARTIFACT)
    assert json.loads(Path(comparison).read_text())["reproduced"] is True
    # The worktree it was built in is gone.
    assert len(run(original.project, "git", "worktree", "list").stdout.splitlines()) == 1


@pytest.mark.slow
@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        ({"git_dirty": "true"}, ["git_dirty=true", "--allow-dirty"]),
        ({"git_commit": "f" * 40}, ["f" * 40, "not in this repository"]),
        ({"aeflow.stopped_by": "max_time"}, ["stopped early by max_time"]),
        ({}, ["status RUNNING"]),  # the copy is a new run, still open
    ],
)
def test_a_run_that_cannot_be_reproduced_is_refused(original, tags, expected):
    client = original.client
    source = client.get_run(original.run_id)
    bad = client.create_run(source.info.experiment_id, tags={**source.data.tags, **tags}).info.run_id
    proc = reproduce(original.project, bad)
    assert proc.returncode == EXIT_REFUSED, proc.stdout + proc.stderr
    assert all(text in proc.stderr for text in expected), proc.stderr[-3000:]
    assert reproductions(client, bad) == []


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.email=t@t", "-c", "user.name=t", *args],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def test_git_dirty_counts_only_code_and_config_sources(tmp_path, monkeypatch):
    for rel in ("src/aeflow/model.py", "conf/config.yaml", "params.yaml", "README.md", "dvc.yaml"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("a: 1\n")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "base")
    base = git(tmp_path, "rev-parse", "HEAD")
    monkeypatch.chdir(tmp_path / "src")  # any folder of the repository
    monkeypatch.delenv("DVC_EXP_BASELINE_REV", raising=False)
    assert not git_dirty()
    # What `dvc exp run -S` and the pipeline leave behind, and docs: recorded, or never read.
    (tmp_path / "params.yaml").write_text("a: 2\n")
    (tmp_path / "README.md").write_text("b\n")
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics/train.json").write_text("{}")
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\n")
    assert not git_dirty()
    new_preset = tmp_path / "conf/experiment/new.yaml"
    new_preset.parent.mkdir()
    new_preset.write_text("a: 3\n")  # untracked, but a run can compose it
    assert git_dirty()
    new_preset.unlink()
    (tmp_path / "src/aeflow/model.py").write_text("a: 2\n")
    git(tmp_path, "add", "src/aeflow/model.py")  # staged counts too
    assert git_dirty()
    git(tmp_path, "commit", "-qm", "code")
    assert not git_dirty()
    # `dvc exp run` compares with its baseline: the code differs from that commit.
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", base)
    assert git_dirty()


@pytest.mark.slow
def test_a_run_without_a_data_hash_or_whose_config_differs_from_its_params_is_refused(original):
    client = original.client
    no_hash = copy_run(client, original.run_id)
    client.delete_tag(no_hash, "data_dvc_md5")
    other_config = copy_run(client, original.run_id, seed=7)
    for run_id, expected in (
        (no_hash, ["records no DVC hash of its data", "data_dvc_md5"]),
        (other_config, ["differs from run", "logged params in seed", "cannot tell which config"]),
        # The data the download stage gives is not the data the run used.
        (copy_run(client, original.run_id, data_dvc_md5="0" * 32 + ".dir"), ["has DVC hash", "0" * 32]),
    ):
        proc = reproduce(original.project, run_id)
        assert proc.returncode == EXIT_REFUSED, proc.stdout + proc.stderr[-3000:]
        assert all(text in proc.stderr for text in expected), proc.stderr[-3000:]
    assert "--rtol -1.0: must be >= 0" in reproduce(original.project, original.run_id, "--rtol", "-1").stderr


@pytest.mark.slow
def test_a_tampered_metric_is_reported_as_a_mismatch_through_a_tracking_server(original, tmp_path):
    client = original.client
    # A copy tagged git_dirty=true, one test metric tampered with: --allow-dirty lets it through.
    tampered = copy_run(client, original.run_id, git_dirty="true")
    value = client.get_run(tampered).data.metrics[TAMPERED]
    client.log_metric(tampered, TAMPERED, value * 1.001)
    # The store read and written through a real `mlflow server` (the clone's SQLite file behind it).
    server = start_mlflow_server(tmp_path, backend_uri=f"sqlite:///{original.project / 'mlflow.db'}")
    try:
        proc = reproduce(original.project, tampered, "--allow-dirty", "--tracking-uri", server.url)
    finally:
        stop_server(server)
    assert proc.returncode == EXIT_MISMATCH, proc.stdout[-3000:] + proc.stderr[-5000:]
    rows = table_rows(proc.stdout)
    assert rows[TAMPERED][3] == "NO" and rows[TAMPERED][2] != "0"
    assert all(cells[3] == "yes" for metric, cells in rows.items() if metric != TAMPERED), proc.stdout
    assert "NOT reproduced: 1 of" in proc.stdout
    (copy,) = reproductions(client, tampered)
    assert copy.data.tags["aeflow.reproduced"] == "false"


@pytest.mark.slow
def test_a_run_made_by_dvc_exp_run_is_reproduced_from_its_experiment_and_remote_data(original, mnist_slice):
    project, client = original.project, original.client
    baseline = run(project, "git", "rev-parse", "HEAD").stdout.strip()
    # A code change no config records: dirty against the baseline, saved in the experiment's commit.
    stage = project / "src/aeflow/stages/train.py"
    stage.write_text(stage.read_text() + "\n# changed in the workspace, kept by the experiment\n")
    sets = [arg for override in overrides(mnist_slice) for arg in ("-S", override)]
    in_clone(project, "dvc", "exp", "run", "-n", "code-change", *sets)
    run_id = json.loads((project / "models/run.json").read_text())["run_id"]
    tags = client.get_run(run_id).data.tags
    assert (tags["dvc_exp_name"], tags["dvc_baseline_rev"], tags["git_dirty"]) == (
        "code-change",
        baseline,
        "true",
    )
    # The data only on a DVC remote (a local folder): the reproduction pulls it.
    in_clone(project, "dvc", "remote", "add", "--local", "-d", "store", str(project.parent / "dvc-remote"))
    in_clone(project, "dvc", "push")
    cache = project / ".dvc/cache/files/md5"
    listing = cache / tags["data_dvc_md5"][:2] / tags["data_dvc_md5"][2:]
    for entry in json.loads(listing.read_text()):
        (cache / entry["md5"][:2] / entry["md5"][2:]).unlink()
    listing.unlink()
    proc = reproduce(project, run_id)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "not in the DVC cache, trying `dvc pull`" in proc.stderr
    experiment = run(
        project, "git", "rev-parse", f"refs/exps/{baseline[:2]}/{baseline[2:]}/code-change"
    ).stdout
    (copy,) = reproductions(client, run_id)
    assert copy.data.tags["git_commit"] == experiment.strip() != baseline
    assert copy.data.tags["git_dirty"] == "false" and copy.data.tags["aeflow.reproduced"] == "true"
