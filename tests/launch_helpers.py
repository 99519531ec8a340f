"""Helpers for tests that launch several processes."""

import socket


def free_port() -> int:
    """A TCP port free right now on localhost: each torchrun launch gets its own rendezvous port, so
    tests running side by side (pytest-xdist workers) never meet on one."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
