"""Forged headers through a real socket: `atelier serve` as a process, a client on loopback that
sends ``X-Forwarded-For`` of its own invention. Without ATELIER_TRUSTED_PROXIES the header
changes nothing (the rate limits count the TCP peer); with the peer listed as a trusted proxy,
the right-most untrusted address of the header is the client."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from tests.faults.fault_fixtures import Process, base_env, wait_ready
from tests.service.service_fixtures import free_port

ADMIN_TOKEN = "the-operator-token-" + "x" * 20


def _serve(tmp_path: Path, models_dir: Path, name: str, **settings: str) -> tuple[Process, str]:
    port = free_port()
    env = base_env(
        models_dir,
        ATELIER_DATA_DIR=str(tmp_path / name),
        ATELIER_ADMIN_TOKEN=ADMIN_TOKEN,
        ATELIER_RATE_LIMIT_ADMIN_LOGINS_PER_IP="3",
        ATELIER_RATE_LIMIT_COMMISSIONS_PER_IP="1",
        **settings,
    )
    process = Process(name, ["serve", "--port", str(port), "--workers", "0"], env, tmp_path / f"{name}.log")
    base = f"http://127.0.0.1:{port}"
    wait_ready(base, process)
    return process, base


def _csrf(http: httpx.Client) -> str:
    page = http.get("/admin")
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found, page.text[:500]
    return found.group(1)


def _forged(n: int) -> dict[str, str]:
    return {"X-Forwarded-For": f"9.9.{n}.9"}


@pytest.fixture
def untrusting(tmp_path: Path, models_dir: Path):  # type: ignore[no-untyped-def]
    process, base = _serve(tmp_path, models_dir, "untrusting")
    yield base
    process.stop()


def test_a_forged_x_forwarded_for_does_not_escape_the_commission_limit(untrusting: str) -> None:
    with httpx.Client(base_url=untrusting, timeout=30) as http:
        # Counted before the body is read: an order the form refuses still counts.
        first = http.post("/api/v1/artworks", data={"style_name": "none", "email": "ana@example.com"})
        assert first.status_code != 429, first.text
        again = http.post("/api/v1/artworks", data={"style_name": "none", "email": "ana@example.com"}, headers=_forged(1))
        assert again.status_code == 429, again.text
        assert int(again.headers["Retry-After"]) > 0


def test_admin_sign_ins_from_forged_addresses_share_the_peers_limit(untrusting: str) -> None:
    with httpx.Client(base_url=untrusting, timeout=30) as http:
        token = _csrf(http)
        codes = [
            http.post("/admin/login", data={"csrf_token": token, "token": f"guess-{n}"}, headers=_forged(n)).status_code
            for n in range(6)
        ]
    assert codes == [401, 401, 401, 429, 429, 429]


def test_behind_a_trusted_proxy_the_forwarded_client_is_counted(tmp_path: Path, models_dir: Path) -> None:
    # The same loopback client, now declared a proxy: each forwarded address has its own count,
    # and the left-most entries (which the client could have made up) are not believed.
    process, base = _serve(tmp_path, models_dir, "trusting", ATELIER_TRUSTED_PROXIES="127.0.0.1")
    try:
        with httpx.Client(base_url=base, timeout=30) as http:
            codes = [
                http.post("/api/v1/artworks", data={"style_name": "none"}, headers={"X-Forwarded-For": f"1.1.1.1, 9.9.{n}.9"}).status_code
                for n in range(3)
            ]
            assert 429 not in codes, codes
            same = http.post("/api/v1/artworks", data={"style_name": "none"}, headers={"X-Forwarded-For": "2.2.2.2, 9.9.0.9"})
            assert same.status_code == 429  # 9.9.0.9 already ordered; the made-up 2.2.2.2 changes nothing
    finally:
        process.stop()
