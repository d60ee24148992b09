"""``atelier serve`` in a process of its own, for the benchmarks that measure the service over
HTTP (``bench service``, ``bench load``): a free loopback port, only the ``ATELIER_*`` settings
the bench gives (none inherited from the caller's environment), ready when a health path
answers 200, stopped at the end (SIGTERM, then SIGKILL after 30 s)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from atelier.extras import need


@dataclass(frozen=True)
class Server:
    """A running server: its base URL, process id and log file."""

    url: str
    pid: int
    log_path: Path


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve(
    *,
    settings: dict[str, str],
    log_path: Path,
    workers: int = 0,
    ready_path: str = "/healthz",
    start_timeout: float = 120.0,
) -> Iterator[Server]:
    """``atelier serve --workers N`` with ``settings`` (``ATELIER_*`` variables) on a free port,
    its output in ``log_path``; yields once ``ready_path`` answers 200. RuntimeError with the end
    of the log when it exits or does not get ready in ``start_timeout`` seconds."""
    httpx = need("httpx")

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATELIER_")}
    env.update(settings)
    with open(log_path, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", "from atelier.cli import main; main()", "serve", "--port", str(port), "--workers", str(workers)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + start_timeout
            while True:
                try:
                    if httpx.get(f"{url}{ready_path}", timeout=5).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the server did not start:\n{log_path.read_text(errors='replace')[-3000:]}")
                time.sleep(0.2)
            yield Server(url=url, pid=process.pid, log_path=log_path)
        finally:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
