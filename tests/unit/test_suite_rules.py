"""The test suite's own rules: tiers follow what a test does; missing system packages skip
locally and fail under CI."""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import starts_processes
from tests.helpers import require_module, require_system_path, sh


def _in_process():
    return sum(range(3))


def _starts_git():
    return subprocess.run(["git", "--version"], check=True)


def _through_a_helper(tmp_path):
    return sh(tmp_path, "true")


def _through_a_local_helper():
    return _starts_git()


# Looked up by name, so that this test itself (which starts nothing) stays a unit test.
SAMPLES = {
    "in_process": _in_process,
    "starts_git": _starts_git,
    "through_a_helper": _through_a_helper,
    "through_a_local_helper": _through_a_local_helper,
    "nested": lambda: [_starts_git() for _ in range(1)],
}


def test_tiers_follow_the_processes_a_test_starts(request):
    assert not starts_processes(SAMPLES["in_process"])
    for name in ("starts_git", "through_a_helper", "through_a_local_helper", "nested"):
        assert starts_processes(SAMPLES[name]), name
    assert request.node.get_closest_marker("unit") is not None


def test_missing_system_package_skips_locally_naming_the_install(tmp_path, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(
        pytest.skip.Exception, match=r"Debian's chromium \(sudo apt-get install -y chromium\)"
    ):
        require_system_path(tmp_path / "chromium", "chromium")


def test_missing_system_package_fails_under_ci(tmp_path, monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="dataset-fashion-mnist"):
        require_system_path(tmp_path / "fashion-mnist", "dataset-fashion-mnist")


def test_missing_python_module_skips_locally_and_fails_under_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"install no-such-runtime \(make env"):
        require_module("no_such_runtime", "no-such-runtime")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no_such_runtime cannot be imported.*CI must have it"):
        require_module("no_such_runtime", "no-such-runtime")
    assert require_module("json").dumps([]) == "[]"


def test_present_system_path_is_returned(tmp_path, monkeypatch):
    monkeypatch.setenv("CI", "true")
    assert require_system_path(tmp_path, "anything") == tmp_path


def test_the_suite_sets_one_thread_and_no_dvc_analytics_before_torch_is_imported():
    import os

    from tests.conftest import TORCH_IMPORTED_FIRST

    assert not TORCH_IMPORTED_FIRST
    assert os.environ["DVC_NO_ANALYTICS"] == "1"
    # tests/conftest.py sets 1 unless the caller chose a count.
    assert all(os.environ.get(v) for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"))
