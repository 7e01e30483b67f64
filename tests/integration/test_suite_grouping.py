"""Tests sharing an expensive fixture run on one pytest-xdist worker, so it is built once.

The suite's own tier hook marks them with an `xdist_group`; this runs pytest on a
small suite with that hook, two workers and `--dist loadgroup`, as `make test` does.
"""

from __future__ import annotations

import re

from tests.helpers import run_pytest

FIXTURES = """
import subprocess
import pytest

@pytest.fixture(scope="module")
def shared_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    subprocess.run(["true"], check=True)  # starting a process is what makes it expensive to the tier hook
    return folder
"""

GROUPED = """
from tests_fixtures import shared_run  # noqa: F401


def test_{0}(shared_run):
    assert shared_run.is_dir()
"""


def test_tests_sharing_a_module_run_go_to_one_worker(tmp_path):
    (tmp_path / "conftest.py").write_text(
        "from tests.conftest import pytest_collection_modifyitems  # noqa: F401\n"
    )
    (tmp_path / "tests_fixtures.py").write_text(FIXTURES)
    body = "".join(GROUPED.format(name) for name in ("a", "b", "c", "d"))
    (tmp_path / "test_grouped.py").write_text(body)
    (tmp_path / "test_alone.py").write_text("def test_e():\n    pass\n\n\ndef test_f():\n    pass\n")
    # A module-scoped fixture that starts no process (a trained model, a rendered page): built once too.
    cheap = "import pytest\n\n\n@pytest.fixture(scope='module')\ndef page():\n    return 'x'\n"
    cheap += "".join(f"\n\ndef test_{n}(page):\n    assert page\n" for n in ("g", "h", "i", "j"))
    (tmp_path / "test_page.py").write_text(cheap)
    proc = run_pytest(tmp_path, "-n", "2", "--dist", "loadgroup", "-v")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ran = {test: worker for worker, test in re.findall(r"\[(gw\d)\].*PASSED (\S+)", proc.stdout)}
    grouped = {t: w for t, w in ran.items() if "test_grouped.py" in t}
    assert len(grouped) == 4 and all(t.endswith("@test_grouped") for t in grouped), proc.stdout[-3000:]
    assert len(set(grouped.values())) == 1, grouped  # one worker, one build of the module's run
    assert not any("@" in t for t in ran if "test_alone.py" in t), ran
    paged = {t: w for t, w in ran.items() if "test_page.py" in t}
    assert len(paged) == 4 and len(set(paged.values())) == 1, paged
