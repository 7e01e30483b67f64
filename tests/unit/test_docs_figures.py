"""The docs' figures come from records in results/: no table shows a number no record holds,
README.md's tables are current, and `aeflow record` writes a record from a run."""

from __future__ import annotations

import json
import shutil

import mlflow
import pytest

from aeflow.docs import records, tables
from aeflow.docs.records import RecordError, held_numbers, is_held, load_records
from tests.helpers import REPO


@pytest.fixture(scope="module")
def committed() -> dict:
    return load_records(REPO / records.RESULTS_DIR)


def test_no_table_of_figures_shows_a_number_that_no_record_holds(committed):
    assert tables.check_pages(REPO, committed) == {}


def test_readme_tables_are_rendered_from_the_current_records(committed):
    readme = (REPO / "README.md").read_text()
    assert "<!-- aeflow:table headline -->" in readme
    assert tables.fill(readme, committed) == readme, "README.md's tables are stale: run `make readme`"


def test_readme_is_short_and_starts_with_the_two_commands():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= 200
    first_block = lines[lines.index("```bash") + 1 : lines.index("```")]
    assert [line.split()[:2] for line in first_block if line.startswith("make")] == [
        ["make", "run"],
        ["make", "test"],
    ]


def test_a_hand_typed_figure_is_caught_and_a_rounded_recorded_one_is_not():
    record = {"runs": [{"seed": 1, "mlflow_run_id": None, "metrics": {"test/sq_err_per_image": 8.384131978}}]}
    held = held_numbers({"r": record})
    page = "| model | error |\n|---|---|\n| tutorial | 8.38 |\n| typed | 8.126 |\n| `code 8.5` | x |\n"
    assert tables.check_page(page, held) == ["line 4: 8.126"]
    assert is_held("8.3841", held) and not is_held("8.3842", held)


def test_a_figure_typed_into_a_page_fails_the_check(committed, tmp_path):
    for page in tables.FIGURE_PAGES:
        (tmp_path / page).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / page, tmp_path / page)
    results = tmp_path / "docs/results.md"
    results.write_text(results.read_text() + "\n| tutorial | 8.126 |\n|---|---|\n| typed | 7.777 |\n")
    problems = tables.check_pages(tmp_path, committed)
    assert {page: {b.split(": ")[1] for b in bad} for page, bad in problems.items()} == {
        "docs/results.md": {"7.777"}
    }


def test_a_malformed_record_is_refused_naming_the_key(tmp_path):
    good = json.loads((REPO / "results/mnist-tutorial.json").read_text())
    (tmp_path / "mnist-tutorial.json").write_text(json.dumps({**good, "machine": {"cpu": "x"}}))
    with pytest.raises(RecordError, match="machine=.*cores, numerics, fingerprint"):
        load_records(tmp_path)


def test_record_from_a_real_mlflow_run(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("autoencoder", artifact_location=(tmp_path / "art").as_uri())
    run = client.create_run(experiment)
    client.log_param(run.info.run_id, "seed", "7")
    client.log_metric(run.info.run_id, "test/sq_err_per_image", 8.384131978)
    client.set_tag(run.info.run_id, records.FINGERPRINT_TAG, "abc123")
    client.set_tag(run.info.run_id, records.CPU_TAGS[0], "Some CPU")
    out = tmp_path / "results"
    records.main(
        [
            "mnist-x",
            "--run",
            run.info.run_id,
            "--tracking-uri",
            uri,
            "--command",
            "make run",
            "--out",
            str(out),
        ]
    )
    written = load_records(out)["mnist-x"]
    assert written["runs"] == [
        {"seed": 7, "mlflow_run_id": run.info.run_id, "metrics": {"test/sq_err_per_image": 8.384131978}}
    ]
    assert written["machine"]["fingerprint"] == "abc123" and written["machine"]["cpu"] == "Some CPU"
    assert written["machine"]["numerics"] == "native" and written["command"] == "make run"


def test_record_from_metrics_files_and_benchmark_rows(tmp_path):
    metrics = tmp_path / "evaluate.json"
    metrics.write_text(json.dumps({"test": {"psnr": 19.7, "by_digit": {"0": 9.8}}, "skipped": "a note"}))
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps([{"stage": "train", "s": 8.57}]))
    out = tmp_path / "results"
    records.main(["a", "--metrics", str(metrics), "--seed", "3", "--command", "make run", "--out", str(out)])
    records.main(["b", "--rows", str(rows), "--command", "make bench", "--out", str(out)])
    written = load_records(out)
    assert written["a"]["runs"][0]["metrics"] == {"test/psnr": 19.7, "test/by_digit/0": 9.8}
    assert written["a"]["runs"][0]["seed"] == 3
    assert written["b"]["rows"] == [{"stage": "train", "s": 8.57}]
    assert written["b"]["machine"]["cpu"] == records.local_cpu()
