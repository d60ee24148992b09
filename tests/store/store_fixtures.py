"""Plain helpers of the store tests (``from tests.store.store_fixtures import ...``).

Test modules must not ``from conftest import``: fixtures come from pytest, helpers from the
``*_fixtures`` modules, imported by their full name in the ``tests`` package.
"""

from __future__ import annotations

import socket

import pytest

#: Parametrize a test over both database backends (PostgreSQL cases carry the postgres mark).
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]

#: The access key the loopback S3 server (moto) is started with.
S3_CREDENTIALS = {"access_key_id": "testing-key", "secret_access_key": "testing-secret"}


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
