"""A test that points MLflow at its own store leaves the next test on its worker unaffected.

`mlflow.set_tracking_uri` sets a process global and MLFLOW_TRACKING_URI; the suite resets both
after each test. This runs pytest, in one process, on two tests with the suite's conftest.
"""

from __future__ import annotations

from tests.helpers import run_pytest

TESTS = """
import os

import mlflow


def test_a_sets_its_store(tmp_path):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'gone.db'}")
    assert "gone.db" in os.environ["MLFLOW_TRACKING_URI"]


def test_b_sees_the_environment(monkeypatch, tmp_path):
    assert "gone.db" not in os.environ.get("MLFLOW_TRACKING_URI", "")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mine.db'}")
    assert mlflow.get_tracking_uri().endswith("mine.db")
"""


def test_a_tracking_uri_set_by_one_test_is_gone_in_the_next(tmp_path):
    fixture = "from tests.conftest import _mlflow_tracking_uri_reset  # noqa: F401\n"
    (tmp_path / "conftest.py").write_text(fixture)
    (tmp_path / "test_order.py").write_text(TESTS)
    proc = run_pytest(tmp_path, "-p", "no:randomly", "-v")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("PASSED") == 2, proc.stdout[-3000:]
