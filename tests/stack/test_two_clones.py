"""Two teammates share one stack: A runs an experiment and pushes it (git + DVC's S3 remote),
B fetches it, pulls its data, finds A's run in the PostgreSQL-backed store and reproduces it."""

from __future__ import annotations

import json
import subprocess

import mlflow
import pytest

from tests.stack.conftest import BIN, add_dvc_remote, git, run_in, tiny_clone
from tests.team.test_reproduce import table_rows

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_run_pushed_by_one_clone_is_reproduced_exactly_by_another(stack, tiny_mirror, tmp_path):
    origin = tmp_path / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", str(origin)], check=True)
    (tmp_path / "alice").mkdir()
    alice = tiny_clone(tmp_path / "alice", tiny_mirror)
    add_dvc_remote(alice, stack)
    git(alice, "remote", "add", "origin", str(origin))
    git(alice, "push", "-q", "origin", "HEAD:refs/heads/main")

    # Alice: an experiment, its data and outputs to the S3 remote, the experiment to git.
    run_in(alice, stack, "dvc", "exp", "run", "-n", "alice-run")
    run_id = json.loads((alice / "metrics/train.json").read_text())["mlflow_run_id"]
    run_in(alice, stack, "dvc", "push")
    run_in(alice, stack, "dvc", "exp", "push", "origin", "alice-run")

    # Bob: a fresh clone of the team's repository, nothing local but the code.
    bob = tmp_path / "bob"
    subprocess.run(["git", "clone", "-q", "-b", "main", str(origin), str(bob)], check=True)
    run_in(bob, stack, "dvc", "exp", "pull", "origin", "alice-run")
    run_in(bob, stack, "dvc", "exp", "apply", "alice-run")
    pulled = run_in(bob, stack, "dvc", "pull")
    assert (bob / "data/raw/t10k-images-idx3-ubyte").is_file(), pulled.stdout + pulled.stderr
    assert (bob / "models/best.ckpt").is_file()

    client = mlflow.MlflowClient(stack.tracking_uri)
    alices = client.get_run(run_id)
    assert alices.info.status == "FINISHED" and alices.data.tags["dvc_exp_name"] == "alice-run"

    proc = run_in(bob, stack, str(BIN / "aeflow"), "reproduce", run_id, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    print(proc.stdout)  # the comparison, shown with `pytest -rP`
    rows = table_rows(proc.stdout)
    assert "test/sq_err_per_image" in rows and len(rows) > 10, proc.stdout
    # Exact: every test metric equal, difference 0.
    assert all(cells[2:] == ["0", "yes"] for cells in rows.values()), proc.stdout
    (copy,) = client.search_runs([alices.info.experiment_id], f"tags.`aeflow.reproduces` = '{run_id}'")
    assert copy.data.tags["aeflow.reproduced"] == "true"
