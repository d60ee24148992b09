"""Helpers of the fault tests (plain code, ``tests.faults.fault_fixtures``): `atelier` processes, a private
PostgreSQL server that a test may stop and start, an S3 API server that a test may take away.

The fault tests break things on purpose, so they never break what other tests share: the
PostgreSQL server they stop is one of their own (initdb into a temporary folder, a free port),
never the one on 5432.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.service.service_fixtures import LENIENT_CHECK_ENV, free_port

ATELIER = str(Path(sys.executable).with_name("atelier"))


class Process:
    """An `atelier ...` command in a process of its own, its output in a log file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.log = log
        self.out = open(log, "wb")
        self.popen = subprocess.Popen([ATELIER, *args], env=env, stdout=self.out, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM and wait; SIGKILL if it does not stop in time."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            return self.popen.wait()
        finally:
            self.out.close()

    def kill(self) -> None:
        """SIGKILL: no handler runs, nothing is handed back."""
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()

    def text(self) -> str:
        return self.log.read_text(errors="replace")


def base_env(models_dir: Path, **settings: str) -> dict[str, str]:
    """This environment without any ATELIER_* variable, plus the weights and ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATELIER_")}
    env.update(
        {
            "ATELIER_MODELS_DIR": str(models_dir),
            "ATELIER_DEVICE": "cpu",
            "ATELIER_THREADS": "1",
            "ATELIER_PREVIEW_MAX_SIZE": "96",
            "ATELIER_INSTANT_MAX_SIZE": "256",
            **LENIENT_CHECK_ENV,
        }
    )
    env.update(settings)
    return env


def wait_until(condition: Callable[[], Any], *, seconds: float, what: str, interval: float = 0.2) -> Any:
    """Poll ``condition`` until it returns something truthy; that value. AssertionError after
    ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {seconds} s")
        time.sleep(interval)


def wait_ready(base: str, process: Process, seconds: float = 60) -> None:
    """Wait for /readyz to answer 200 (the server made the schema and can serve)."""

    def ready() -> bool:
        assert process.alive(), process.text()[-3000:]
        try:
            return httpx.get(f"{base}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(ready, seconds=seconds, what=f"{base}/readyz", interval=0.3)


# ------------------------------------------------------------------------------------------------
# a PostgreSQL server of the test's own


def postgres_bin() -> Path:
    """The folder of Debian's PostgreSQL programs (the newest version installed)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0)
    if not found:
        pytest.fail("no PostgreSQL server programs under /usr/lib/postgresql/*/bin (apt-get install postgresql)", pytrace=False)
    return found[-1].parent


class PrivatePostgres:
    """A PostgreSQL server in a temporary folder on a free loopback port, for tests that stop
    and start it. As root, the programs run as the ``postgres`` user (initdb refuses root)."""

    def __init__(self) -> None:
        self.bin = postgres_bin()
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="atelier-pg-"))
        self.data = self.root / "data"
        self.logfile = self.root / "server.log"
        self._as: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            self._as = ["runuser", "-u", "postgres", "--"]

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 60) -> None:
        result = subprocess.run([*self._as, *args], capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            log = self.logfile.read_text(errors="replace")[-2000:] if self.logfile.exists() else ""
            raise RuntimeError(f"{' '.join(args)} failed: {result.stdout}{result.stderr}\n{log}")

    def init(self) -> PrivatePostgres:
        # No fsync: the tests restart the server cleanly, and fsync is most of a write's time here.
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8")
        return self

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.logfile), "-o", options, "-w", "-t", "30", "start")

    def stop(self) -> None:
        """Stop now: clients are disconnected (their next query fails), as when a server dies."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop")

    def running(self) -> bool:
        result = subprocess.run([*self._as, str(self.bin / "pg_ctl"), "-D", str(self.data), "status"], capture_output=True)
        return result.returncode == 0

    def destroy(self) -> None:
        if self.data.exists() and self.running():
            try:
                self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
            except RuntimeError:
                pass
        shutil.rmtree(self.root, ignore_errors=True)
