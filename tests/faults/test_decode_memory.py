"""Memory amplification under the pixel limit: a 128 KB PNG that declares 6300x6300 pixels (under
the 40 MP limit, so it is accepted) costs a few hundred MiB to decode. Six sent at once to a real
`atelier serve` must not cost six times that: decoding takes its share of a memory budget
(ATELIER_DECODE_MEMORY_MB, estimated from the header), waits a little for room, and is refused
with 503 + Retry-After when none comes."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.faults.fault_fixtures import Process, base_env, wait_ready
from tests.service.service_fixtures import free_port

pytestmark = pytest.mark.slow

SIDE = 6300


def _flat_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (SIDE, SIDE), (200, 100, 50)).save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def _peak_mib(pid: int) -> float:
    """The process's resident high-water mark (VmHWM), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_six_small_pngs_of_huge_dimensions_at_once_do_not_cost_six_decodes(tmp_path: Path, models_dir: Path) -> None:
    png = _flat_png()
    assert len(png) < 200_000
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # One such picture's estimate fits the budget, two do not: decodes take turns.
    env = base_env(models_dir, ATELIER_DATA_DIR=str(tmp_path / "data"), ATELIER_DECODE_MEMORY_MB="400", ATELIER_DECODE_WAIT_SECONDS="60")
    server = Process("server", ["serve", "--port", str(port), "--workers", "0"], env, tmp_path / "server.log")
    try:
        wait_ready(base, server)
        before = _peak_mib(server.pid)
        first = httpx.post(f"{base}/api/v1/uploads", files={"file": ("big.png", png, "image/png")}, timeout=120)
        assert first.status_code == 201, first.text
        one = _peak_mib(server.pid) - before  # what one decode costs this process
        assert one > 150, one

        answers: list[httpx.Response] = []

        def send() -> None:
            answers.append(httpx.post(f"{base}/api/v1/uploads", files={"file": ("big.png", png, "image/png")}, timeout=180))

        threads = [threading.Thread(target=send) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        codes = sorted(a.status_code for a in answers)
        assert set(codes) <= {201, 503} and 201 in codes, [a.text for a in answers]
        for refused in (a for a in answers if a.status_code == 503):
            assert refused.json()["error"]["code"] == "busy" and int(refused.headers["Retry-After"]) > 0
        six = _peak_mib(server.pid) - before
        # Taking turns, the six reuse the first one's memory; at once they needed about 6x.
        assert six < 2 * one, f"one decode raised the peak by {one:.0f} MiB, six at once by {six:.0f} MiB"
        assert server.alive()
    finally:
        server.stop()
