"""Helpers of the web tests (plain code, ``tests.web.web_fixtures``): PostgreSQL, a live server."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import pytest

DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def postgres_server() -> str:
    """The PostgreSQL server the tests use, or fail (skip with ATELIER_TEST_SKIP_POSTGRES=1)
    saying why it cannot be reached -- as the store tests do."""
    if os.environ.get("ATELIER_TEST_SKIP_POSTGRES") == "1":
        pytest.skip("PostgreSQL tests skipped: ATELIER_TEST_SKIP_POSTGRES=1")
    url = os.environ.get("ATELIER_TEST_POSTGRES_URL") or DEFAULT_POSTGRES
    try:
        import psycopg
        from sqlalchemy.engine import make_url

        conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(conninfo, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"PostgreSQL is not available at {url} ({exc}); start one or set ATELIER_TEST_SKIP_POSTGRES=1", pytrace=False)
    return url


class LiveServer:
    """The app served by uvicorn on a free loopback port, in a thread of this process."""

    def __init__(self, app: Any, port: int) -> None:
        import uvicorn

        self.url = f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", proxy_headers=False))
        self.thread = threading.Thread(target=self.server.run, name="live-server", daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(60)


def form_token(client: Any, page: str = "/en/") -> str:
    """The CSRF token a page puts in its forms (the client keeps the cookie it pairs with)."""
    import re

    html = client.get(page).text
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, f"no CSRF field on {page}"
    return match.group(1)
