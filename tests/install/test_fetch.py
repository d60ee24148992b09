"""The one streaming download loop that weights and paintings share, against a loopback server."""

from __future__ import annotations

import hashlib
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from atelier.install.fetch import FetchError, fetch
from atelier.art.progress import Progress

BODY = bytes(range(256)) * 4096  # 1 MiB


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if self.path == "/short":  # announces more than it sends, then hangs up
                self.send_response(200)
                self.send_header("Content-Length", str(len(BODY)))
                self.end_headers()
                self.wfile.write(BODY[:1000])
                return
            if self.path == "/missing":
                self.send_error(404, "Not Found")
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def _get(url: str, dest: Path, *, limit: int = 10 * len(BODY), progress=None) -> tuple[int, str]:
    return fetch(url, dest, limit=limit, stage="file", user_agent="test", timeout=10, progress=progress)


def test_a_file_arrives_whole_with_its_sha256_and_progress(base: str, tmp_path: Path) -> None:
    seen: list[Progress] = []
    size, sha = _get(f"{base}/file", tmp_path / "f", progress=seen.append)
    assert (size, sha) == (len(BODY), hashlib.sha256(BODY).hexdigest())
    assert (tmp_path / "f").read_bytes() == BODY
    assert seen[-1].step == seen[-1].total == len(BODY)


def test_an_announced_size_over_the_limit_is_refused_before_reading(base: str, tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="offers 1048576 bytes") as info:
        _get(f"{base}/file", tmp_path / "f", limit=1000)
    assert not info.value.unreachable
    assert not (tmp_path / "f").exists()


def test_a_body_shorter_than_announced_is_an_error(base: str, tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="cut off|interrupted"):
        _get(f"{base}/short", tmp_path / "f")


def test_an_http_error_names_the_status(base: str, tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="answered HTTP 404") as info:
        _get(f"{base}/missing", tmp_path / "f")
    assert not info.value.unreachable


def test_a_host_that_does_not_answer_is_marked_unreachable(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(FetchError, match="connection refused") as info:
        _get(f"http://127.0.0.1:{port}/file", tmp_path / "f")
    assert info.value.unreachable
