"""Plain helpers of the store tests, importable by name (``from store_fixtures import ...``).

Test modules must not ``from conftest import``: every test folder has a conftest.py, and which
one the name ``conftest`` means depends on what pytest loaded last.
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
