"""`aeflow reproduce` where the numerics fingerprints differ: the verdict judged by the spread of
`--seeds K` more seeds, or by `--rtol`, on a real pipeline run of its own (tests/team/reproducing.py)."""

from __future__ import annotations

import json

import pytest

from aeflow.tracking.reproduce import EXIT_MISMATCH, SPREAD_TAG
from tests.team.reproducing import (
    OTHER_FAMILY,
    TAMPERED,
    copy_run,
    reproduce,
    reproductions,
    table_rows,
)

pytestmark = pytest.mark.integration


@pytest.mark.slow
def test_a_native_run_reproduced_under_another_kernel_family_is_consistent_not_exact(original):
    """The reproduction runs ATen's DEFAULT kernels and MKL's SSE2 branch (the original: this CPU's
    own), with the data in neither the DVC cache nor a remote: the download stage fetches it."""
    project, client = original.project, original.client
    data_hash = client.get_run(original.run_id).data.tags["data_dvc_md5"]
    cache = project / ".dvc/cache/files/md5"
    listing = cache / data_hash[:2] / data_hash[2:]
    if listing.is_file():
        for entry in json.loads(listing.read_text()):
            (cache / entry["md5"][:2] / entry["md5"][2:]).unlink(missing_ok=True)
        listing.unlink()
    proc = reproduce(project, original.run_id, "--seeds", "2", **OTHER_FAMILY)
    print(proc.stdout)  # the transcript, shown with `pytest -rP`
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "from the DVC cache" not in proc.stderr and "Running stage 'download'" in proc.stderr
    assert "aten.capability: AVX" in proc.stdout and "-> DEFAULT" in proc.stdout
    rows = table_rows(proc.stdout)
    assert any(cells[2] != "0" for cells in rows.values()), "another kernel family gave equal metrics"
    assert "consistent: all" in proc.stdout and "exact" not in proc.stdout.splitlines()[-1]
    (copy,) = [
        r
        for r in reproductions(client, original.run_id)
        if r.data.tags.get("aeflow.numerics.aten.capability") == "DEFAULT"
    ]
    experiment = copy.info.experiment_id
    spread = client.search_runs([experiment], f"tags.`{SPREAD_TAG}` = '{original.run_id}'")
    assert len(spread) == 2 and {r.data.params["seed"] for r in spread} == {"43", "44"}


@pytest.mark.slow
def test_a_metric_far_outside_the_spread_of_the_seeds_is_not_reproduced(original):
    client = original.client
    # The original claims another CPU (another fingerprint) and ten times the test error it got.
    tampered = copy_run(
        client,
        original.run_id,
        scale={TAMPERED: 10.0},
        git_dirty="true",
        **{"aeflow.numerics.cpu.model": "another CPU"},
    )
    proc = reproduce(original.project, tampered, "--allow-dirty", "--seeds", "2")
    assert proc.returncode == EXIT_MISMATCH, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "cpu.model: another CPU ->" in proc.stdout
    rows = table_rows(proc.stdout)
    assert rows[TAMPERED][3] == "NO" and all(c[3] == "yes" for m, c in rows.items() if m != TAMPERED)
    assert "NOT reproduced: 1 of" in proc.stdout and "spread of 3 seeds" in proc.stdout


@pytest.mark.slow
def test_rtol_on_the_command_line_accepts_a_small_difference(original):
    client = original.client
    nudged = copy_run(client, original.run_id, scale={TAMPERED: 1.001}, git_dirty="true")
    proc = reproduce(original.project, nudged, "--allow-dirty", "--rtol", "0.01")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    rows = table_rows(proc.stdout)
    assert rows[TAMPERED][2] != "0" and rows[TAMPERED][3] == "yes"
    assert "consistent: all" in proc.stdout and "(rtol 0.01)" in proc.stdout
