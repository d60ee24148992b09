"""Rate limits per client address and per email: counted in the database (shared by every web
process on it), answered 429 with Retry-After -- JSON on the API, a page on the forms; the
client address comes from X-Forwarded-For only behind a trusted proxy."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from atelier.service.context import Services
from atelier.service.ratelimit import hit
from atelier.store.db import make_engine
from atelier.store.migrations import upgrade
from atelier.web.app import create_app
from atelier.web.security import client_address
from tests.service.service_fixtures import install_test_style, make_settings
from tests.web.web_fixtures import form_token


def app_client(settings, peer: str = "testclient") -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    services = Services.open(settings, public_url="http://testserver")
    try:
        with TestClient(create_app(services=services, workers=0, mail=False), client=(peer, 50000)) as client:
            yield client
    finally:
        services.close()


@pytest.fixture
def limited(tmp_path: Path, models_dir: Path) -> Iterator[TestClient]:
    settings = make_settings(tmp_path, models_dir, rate_limit_uploads_per_ip=2, rate_limit_commissions_per_email=1)
    yield from app_client(settings)


def test_the_api_answers_429_with_retry_after_past_the_limit(limited: TestClient, photo_bytes: bytes) -> None:
    for _ in range(2):
        assert limited.post("/api/v1/uploads", files={"file": ("a.jpg", photo_bytes, "image/jpeg")}).status_code == 201
    refused = limited.post("/api/v1/uploads", files={"file": ("a.jpg", photo_bytes, "image/jpeg")})
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited"
    assert 0 < int(refused.headers["retry-after"]) <= 3600
    # Other routes that take a file share the address's count; reading is not limited.
    assert limited.post("/api/v1/stylize", data={"content_id": "x", "style_name": "candy"}).status_code == 429
    assert limited.get("/api/v1/styles").status_code == 200


def test_a_form_over_the_limit_gets_a_page_in_its_language(limited: TestClient, photo_bytes: bytes) -> None:
    token = form_token(limited, "/es/")
    for _ in range(2):
        limited.post("/api/v1/uploads", files={"file": ("a.jpg", photo_bytes, "image/jpeg")})
    page = limited.post("/es/instant", data={"csrf_token": token, "style": "candy"}, files={"photo": ("a.jpg", photo_bytes, "image/jpeg")})
    assert page.status_code == 429 and page.headers["content-type"].startswith("text/html")
    assert "Has enviado muchas solicitudes" in page.text and "Retry-After" in page.headers


def test_commissions_are_limited_per_email_whatever_the_case(limited: TestClient, services: Services, photo_bytes: bytes, style_dir: Path) -> None:
    install_test_style(limited.app.state.services, style_dir)  # type: ignore[attr-defined]
    first = limited.post("/api/v1/artworks", data={"style_name": "starry-night", "email": "Ana@Example.com"}, files={"content": ("a.jpg", photo_bytes, "image/jpeg")})
    assert first.status_code == 201, first.text
    again = limited.post("/api/v1/artworks", data={"style_name": "starry-night", "email": "ana@example.com"}, files={"content": ("a.jpg", photo_bytes, "image/jpeg")})
    assert again.status_code == 429 and "email" in again.json()["error"]["message"]


def test_plus_tags_and_gmail_dots_count_as_the_same_address(tmp_path: Path, models_dir: Path, photo_bytes: bytes, style_dir: Path) -> None:
    settings = make_settings(tmp_path, models_dir, rate_limit_commissions_per_email=2)
    for client in app_client(settings):
        install_test_style(client.app.state.services, style_dir)  # type: ignore[attr-defined]

        def order(email: str) -> int:
            answer = client.post("/api/v1/artworks", data={"style_name": "starry-night", "email": email}, files={"content": ("a.jpg", photo_bytes, "image/jpeg")})
            return answer.status_code

        assert [order("pe@example.com"), order("pe+1@example.com"), order("PE+2@Example.com")] == [201, 201, 429]
        assert [order("p.e.x@gmail.com"), order("pex+1@googlemail.com"), order("P.EX@gmail.com")] == [201, 201, 429]
        # The mail still goes to the address given, tag and all.
        from atelier.store.db import Artwork, transaction

        with transaction(client.app.state.services.engine, read_only=True) as session:  # type: ignore[attr-defined]
            owners = sorted(a.owner_email for a in session.query(Artwork))
        assert owners == ["p.e.x@gmail.com", "pe+1@example.com", "pe@example.com", "pex+1@googlemail.com"]


def test_an_address_hiding_encoded_words_is_refused_at_the_form(limited: TestClient, photo_bytes: bytes, style_dir: Path) -> None:
    install_test_style(limited.app.state.services, style_dir)  # type: ignore[attr-defined]
    hostile = "=?utf-8?q?attacker=40evil.test=2C_second=40evil.test=2C?=@example.com"
    answer = limited.post("/api/v1/artworks", data={"style_name": "starry-night", "email": hostile}, files={"content": ("a.jpg", photo_bytes, "image/jpeg")})
    assert answer.status_code == 422 and "email" in answer.json()["error"]["message"]
    token = form_token(limited, "/en/commission")
    other = "=?utf-8?q?=3Cscript=3E?=@example.com"  # a fresh address: the first one's limit is used up
    page = limited.post("/en/commission", data={"csrf_token": token, "style": "starry-night", "email": other}, files={"photo": ("a.jpg", photo_bytes, "image/jpeg")})
    # Sent back to the form (POST-redirect-GET), which names the problem.
    assert [r.status_code for r in page.history] == [303] and "email address does not look right" in page.text


def test_two_web_processes_on_one_database_share_the_count(tmp_path: Path, models_dir: Path, photo_bytes: bytes) -> None:
    database = f"sqlite:///{tmp_path / 'shared.db'}"
    one = make_settings(tmp_path / "one", models_dir, database_url=database, storage_url=(tmp_path / "blobs").as_uri(), rate_limit_uploads_per_ip=3)
    two = make_settings(tmp_path / "two", models_dir, database_url=database, storage_url=(tmp_path / "blobs").as_uri(), rate_limit_uploads_per_ip=3)
    first, second = app_client(one), app_client(two)
    a, b = next(first), next(second)
    try:
        codes = [c.post("/api/v1/uploads", files={"file": ("a.jpg", photo_bytes, "image/jpeg")}).status_code for c in (a, b, a, b)]
    finally:
        for gen in (first, second):
            gen.close()
    assert codes == [201, 201, 201, 429]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'limits.db'}"
        engine = make_engine(url)
        upgrade(engine)
        yield engine
        engine.dispose()
        return
    from atelier.store.scratch import scratch_database
    from tests.web.web_fixtures import postgres_server

    with scratch_database(postgres_server(), prefix="atelier_limits") as url:
        engine = make_engine(url)
        upgrade(engine)
        yield engine
        engine.dispose()


def test_concurrent_hits_never_let_more_than_the_limit_through(engine) -> None:  # type: ignore[no-untyped-def]
    allowed: list[bool] = []
    lock = threading.Lock()

    def client() -> None:
        for _ in range(5):
            decision = hit(engine, scope="upload", kind="ip", value="198.51.100.7", limit=12, window_seconds=3600, now=1_000_000.0)
            with lock:
                allowed.append(decision.allowed)

    threads = [threading.Thread(target=client) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(allowed) == 30 and allowed.count(True) == 12


def test_a_new_window_starts_over_and_retry_after_says_when(engine) -> None:  # type: ignore[no-untyped-def]
    start = 7200 * 500
    for _ in range(2):
        assert hit(engine, scope="s", kind="ip", value="v", limit=2, window_seconds=3600, now=start + 100).allowed
    refused = hit(engine, scope="s", kind="ip", value="v", limit=2, window_seconds=3600, now=start + 600)
    assert not refused.allowed and refused.retry_after == 3000
    assert hit(engine, scope="s", kind="ip", value="other", limit=2, window_seconds=3600, now=start + 600).allowed
    assert hit(engine, scope="s", kind="ip", value="v", limit=2, window_seconds=3600, now=start + 3600).allowed


def _scope(peer: str, forwarded: str | None = None) -> dict:  # type: ignore[type-arg]
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
    return {"client": (peer, 1234), "headers": headers}


def test_forwarded_addresses_are_believed_only_from_trusted_proxies() -> None:
    # No trusted proxy: the header is the client's own word, ignored.
    assert client_address(_scope("203.0.113.5", "1.1.1.1"), ()) == "203.0.113.5"
    # From an untrusted peer: ignored too.
    assert client_address(_scope("203.0.113.5", "1.1.1.1"), ("10.0.0.0/8",)) == "203.0.113.5"
    # Behind our proxy: the right-most address it did not add itself; what the client
    # prepended (a forged "1.1.1.1") is not taken.
    assert client_address(_scope("10.0.0.2", "1.1.1.1, 198.51.100.20"), ("10.0.0.0/8",)) == "198.51.100.20"
    assert client_address(_scope("10.0.0.2", "198.51.100.20, 10.0.0.9"), ("10.0.0.0/8",)) == "198.51.100.20"
    assert client_address(_scope("10.0.0.2"), ("10.0.0.0/8",)) == "10.0.0.2"


def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_count(tmp_path: Path, models_dir: Path, photo_bytes: bytes) -> None:
    settings = make_settings(tmp_path, models_dir, rate_limit_uploads_per_ip=1, trusted_proxies="10.0.0.0/8")
    gen = app_client(settings, peer="10.0.0.2")
    client = next(gen)
    try:
        send = lambda ip: client.post(  # noqa: E731
            "/api/v1/uploads", files={"file": ("a.jpg", photo_bytes, "image/jpeg")}, headers={"X-Forwarded-For": ip}
        ).status_code
        assert [send("198.51.100.1"), send("198.51.100.2"), send("198.51.100.1")] == [201, 201, 429]
    finally:
        gen.close()


def test_admin_sign_in_attempts_are_limited_per_address(tmp_path: Path, models_dir: Path) -> None:
    settings = make_settings(tmp_path, models_dir, admin_token="a-long-operator-token-0123456789", rate_limit_admin_logins_per_ip=2)
    gen = app_client(settings)
    client = next(gen)
    try:
        token = form_token(client)
        codes = [client.post("/admin/login", data={"csrf_token": token, "token": f"guess-{i}"}).status_code for i in range(3)]
        assert codes == [401, 401, 429]
        # The right token does not get through either until the window ends: guessing stays slow.
        assert client.post("/admin/login", data={"csrf_token": token, "token": "a-long-operator-token-0123456789"}).status_code == 429
    finally:
        gen.close()


def test_a_client_over_its_limit_is_refused_before_sending_its_file(tmp_path: Path, models_dir: Path, photo_bytes: bytes) -> None:
    import socket

    from tests.service.service_fixtures import free_port
    from tests.web.web_fixtures import LiveServer

    settings = make_settings(tmp_path, models_dir, rate_limit_uploads_per_ip=1)
    services = Services.open(settings, public_url="http://127.0.0.1")
    port = free_port()
    try:
        with LiveServer(create_app(services=services, workers=0, mail=False), port):
            import httpx

            first = httpx.post(f"http://127.0.0.1:{port}/api/v1/uploads", files={"file": ("a.jpg", photo_bytes, "image/jpeg")})
            assert first.status_code == 201
            with socket.create_connection(("127.0.0.1", port)) as sock:
                # 20 MB announced, none of it sent: the answer comes anyway.
                sock.sendall(b"POST /api/v1/uploads HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: 20000000\r\n\r\n")
                sock.settimeout(10)
                head = sock.recv(65536)
            assert head.startswith(b"HTTP/1.1 429") and b"retry-after" in head.lower()
    finally:
        services.close()


def test_a_database_outage_leaves_the_answer_to_the_route(limited: TestClient, photo_bytes: bytes) -> None:
    # The counter's table gone stands in for a database that went away: the request is not
    # refused by the limiter (nor a 500), the route answers as it would without it.
    from sqlalchemy import text

    services = limited.app.state.services  # type: ignore[attr-defined]
    with services.engine.begin() as conn:
        conn.execute(text("DROP TABLE rate_counters"))
    answer = limited.post("/api/v1/uploads", files={"file": ("a.jpg", photo_bytes, "image/jpeg")})
    assert answer.status_code == 201


def test_instant_paintings_are_limited_per_address(tmp_path: Path, models_dir: Path, photo_bytes: bytes) -> None:
    settings = make_settings(tmp_path, models_dir, rate_limit_paintings_per_ip=2)
    gen = app_client(settings)
    client = next(gen)
    try:
        photo = client.post("/api/v1/uploads", files={"file": ("a.jpg", photo_bytes, "image/jpeg")}).json()["id"]
        codes = [client.get("/api/v1/stylize", params={"content_id": photo, "style_name": "candy", "size": 64}).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
    finally:
        gen.close()
