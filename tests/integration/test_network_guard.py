"""The network guard: no test, and no process a test starts, opens a connection outside 127.0.0.0/8
and ::1; an attempt fails the test that made it, naming the test and the address, even when the
code under test caught the refusal and carried on."""

from __future__ import annotations

import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import refused_attempts
from tests.helpers import run_pytest, user_env

# TEST-NET-1 (RFC 5737): documentation addresses, never routed.
OUTSIDE = ("192.0.2.1", 9)


def test_the_test_process_is_refused_an_outside_address_and_a_dns_lookup():
    refused_attempts()  # what earlier tests left is theirs
    with pytest.raises(ConnectionRefusedError, match="network guard: a connection to 192.0.2.1:9"):
        socket.create_connection(OUTSIDE, timeout=1)
    with pytest.raises(OSError, match="network guard: a lookup of 'example.com'"):
        urllib.request.urlopen("http://example.com/", timeout=1)  # noqa: S310
    # Taken here, so that this test passes: any other test with such attempts fails.
    attempts = refused_attempts()
    assert len(attempts) == 2 and "192.0.2.1:9" in attempts[0] and "example.com" in attempts[1], attempts
    with socket.socket() as server:  # the loopback range stays open
        server.bind(("127.0.0.1", 0))
        server.listen()
        socket.create_connection(server.getsockname(), timeout=5).close()
    assert refused_attempts() == []


def test_a_python_subprocess_is_refused_and_its_attempt_logged():
    refused_attempts()
    code = f"import socket; socket.create_connection({OUTSIDE!r}, timeout=1)"
    proc = subprocess.run(
        [sys.executable, "-c", code], env=user_env(PYTHONPATH="/elsewhere"), capture_output=True, text=True
    )
    assert proc.returncode != 0 and "network guard: a connection to 192.0.2.1:9" in proc.stderr, proc.stderr
    attempts = refused_attempts()
    assert len(attempts) == 1 and "pid " in attempts[0] and "192.0.2.1:9" in attempts[0], attempts


SWALLOWED = """
import socket


def test_reaches_out_and_carries_on():
    try:
        socket.create_connection(("192.0.2.1", 9), timeout=1)
    except OSError:
        pass
"""


def test_a_test_that_reaches_out_fails_naming_itself_and_the_address(tmp_path: Path):
    (tmp_path / "conftest.py").write_text("from tests.conftest import *  # noqa: F403\n")
    (tmp_path / "test_outside.py").write_text(SWALLOWED)
    proc = run_pytest(tmp_path, "-n", "0")
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (
        "network guard: test_outside.py::test_reaches_out_and_carries_on tried to reach beyond "
        "127.0.0.0/8 and ::1 (call)" in proc.stdout
    ), proc.stdout[-3000:]
    assert "a connection to 192.0.2.1:9" in proc.stdout
