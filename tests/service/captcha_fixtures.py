"""A fake captcha provider: a siteverify endpoint on loopback (the provider's servers cannot be
reached from here). Used by the service's and the web's captcha tests."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs


class FakeVerify:
    """A siteverify endpoint: records each POSTed form, answers what ``answer`` says."""

    def __init__(self) -> None:
        self.requests: list[dict[str, list[str]]] = []
        self.answer: dict[str, object] | str = {"success": True}
        self.status = 200
        self.delay = 0.0
        self.answered = 0  # answers sent (a client that gave up first never gets one)
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("content-length", 0))
                fake.requests.append(parse_qs(self.rfile.read(length).decode()))
                time.sleep(fake.delay)
                body = fake.answer if isinstance(fake.answer, str) else json.dumps(fake.answer)
                try:
                    self.send_response(fake.status)
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(body.encode())
                    fake.answered += 1
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting (the timeout test): nothing to answer

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False  # a handler still sleeping does not hold up the test
        self.url = f"http://127.0.0.1:{self.server.server_port}/siteverify"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
