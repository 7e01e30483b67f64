"""A DVC remote: `dvc push`, then a fresh clone's `dvc pull` restores data and model; nothing re-runs."""

from __future__ import annotations

import pytest

from tests.helpers import ran_stages
from tests.team.conftest import run

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_push_then_pull_in_a_fresh_clone_needs_no_stage(team_project, tmp_path):
    project = team_project.path
    remote = tmp_path / "dvc-remote"  # for a team: s3://bucket/path, gs://..., ssh://..., azure://...
    run(project, "dvc", "remote", "add", "--local", "-d", "team", str(remote))
    out = run(project, "dvc", "push")
    assert "pushed" in (out.stdout + out.stderr).lower()

    clone = tmp_path / "colleague"
    run(tmp_path, "git", "clone", "-q", str(project), str(clone))
    assert not (clone / "models/best.ckpt").exists() and not (clone / "data/raw").exists()
    run(clone, "dvc", "remote", "add", "--local", "-d", "team", str(remote))
    run(clone, "dvc", "pull")

    for rel in (
        "data/raw/train-images-idx3-ubyte",
        "models/best.ckpt",
        "models/run.json",
        "plots/figures/reconstructions.png",
    ):
        assert (clone / rel).read_bytes() == (project / rel).read_bytes(), rel
    status = run(clone, "dvc", "status")
    assert "up to date" in status.stdout.lower(), status.stdout
    assert ran_stages(run(clone, "dvc", "repro").stdout) == set()
