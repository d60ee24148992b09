"""Throwaway PostgreSQL databases, for the test suite and `atelier bench queue`.

Each one gets a unique name on the server the given URL points at, is created empty, and is
dropped afterwards even if connections are still open (``DROP DATABASE ... WITH (FORCE)``).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)


def _server_conninfo(server_url: str) -> str:
    url = make_url(server_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


def create_database(server_url: str, *, prefix: str = "atelier_scratch") -> str:
    """Create a new, empty database on the server of ``server_url`` (connecting to the database
    that URL names) and return a ``postgresql+psycopg://`` URL for it."""
    from atelier.extras import need

    psycopg = need("psycopg")

    name = f"{prefix}_{secrets.token_hex(6)}"
    with psycopg.connect(_server_conninfo(server_url), autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return make_url(server_url).set(drivername="postgresql+psycopg", database=name).render_as_string(
        hide_password=False
    )


def drop_database(url: str, *, via: str | None = None) -> None:
    """Drop the database ``url`` names, closing whatever is still connected to it. ``via`` is
    the URL of another database on the same server to connect to (default: ``postgres``)."""
    from atelier.extras import need

    psycopg = need("psycopg")

    target = make_url(url)
    name = target.database
    if not name:
        raise ValueError("the URL names no database")
    maintenance = via or target.set(database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(_server_conninfo(maintenance), autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def scratch_database(server_url: str, *, prefix: str = "atelier_scratch") -> Iterator[str]:
    """A fresh database for the duration of the block; its URL."""
    url = create_database(server_url, prefix=prefix)
    try:
        yield url
    finally:
        try:
            drop_database(url, via=server_url)
        except Exception:  # report, but do not hide the error that may be propagating
            log.exception("could not drop the scratch database %s", make_url(url).database)
