"""The team stack's port choice: a restarted service gets back the port its clients know."""

from __future__ import annotations

import socket

from aeflow.team.stack import free_port


def test_the_port_of_a_killed_server_with_lingering_connections_is_free_again():
    server = socket.create_server(("127.0.0.1", 0))  # SO_REUSEADDR, as the stack's servers set it
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = server.accept()
    # The server side closes first, as when its process is killed: its end lingers in TIME_WAIT.
    accepted.close()
    server.close()
    client.close()
    assert free_port(port) == port


def test_a_port_something_listens_on_is_not_offered():
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        assert free_port(port) != port
