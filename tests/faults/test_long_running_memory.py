"""A long-running server's memory stays bounded: `atelier serve` with a worker inside runs many
jobs and requests (video jobs painted by the worker, uploads, instant paintings of photos it has
never seen), and its resident memory after the last of them is about what it was once the first
few had warmed it up -- nothing grows with the number of jobs. (The memory an HD painting leaves
behind is the commission issue's; this guards the steady state of everything else.)"""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.faults.fault_fixtures import Process, base_env, wait_ready, wait_until
from tests.service.service_fixtures import free_port, tiny_clip

pytestmark = pytest.mark.slow

WARM_ROUNDS = 8
MORE_ROUNDS = 24
#: Growth allowed between the warm state and the end: allocator slack, not a per-job leak
#: (24 more rounds at even 4 MiB each would pass it).
SLACK_MIB = 96


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _fresh_photo(base: np.ndarray, seed: int) -> bytes:
    """The photo with noise of its own: a picture no cache has seen."""
    noise = np.random.default_rng(seed).integers(-12, 13, size=base.shape)
    image = Image.fromarray(np.clip(base.astype(np.int16) + noise, 0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=88)
    return buffer.getvalue()


def test_memory_after_many_jobs_is_what_it_was_after_the_first_few(tmp_path: Path, models_dir: Path, content_dir: Path) -> None:
    clip = tiny_clip(tmp_path / "pan.mp4", content_dir / "dog.jpg").read_bytes()
    with Image.open(content_dir / "dog.jpg") as image:
        image = image.convert("RGB")
        image.thumbnail((512, 512))
        base_photo = np.asarray(image)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # A small instant cache, so that the cache filling up is not mistaken for growth.
    env = base_env(models_dir, ATELIER_DATA_DIR=str(tmp_path / "data"), ATELIER_INSTANT_CACHE_MB="16")
    server = Process("server", ["serve", "--port", str(port), "--workers", "1"], env, tmp_path / "server.log")
    try:
        wait_ready(base, server)
        with httpx.Client(base_url=base, timeout=120) as http:

            def one_round(n: int) -> None:
                video = http.post("/api/v1/videos", data={"style_name": "mosaic", "size": "96"}, files={"content": ("pan.mp4", clip, "video/mp4")})
                assert video.status_code == 202, video.text
                upload = http.post("/api/v1/uploads", files={"file": ("dog.jpg", _fresh_photo(base_photo, n), "image/jpeg")})
                assert upload.status_code == 201, upload.text
                for style in ("candy", "mosaic"):
                    painted = http.get("/api/v1/stylize", params={"content_id": upload.json()["id"], "style_name": style, "size": 256})
                    assert painted.status_code == 200, painted.text
                status_url = video.json()["status_url"]

                def done() -> bool:
                    assert server.alive(), server.text()[-3000:]
                    state = http.get(status_url).json()["status"]
                    assert state != "failed", server.text()[-3000:]
                    return state == "done"

                wait_until(done, seconds=120, what=f"video job {n}")

            for n in range(WARM_ROUNDS):
                one_round(n)
            warm = _rss_mib(server.pid)
            for n in range(WARM_ROUNDS, WARM_ROUNDS + MORE_ROUNDS):
                one_round(n)
            end = _rss_mib(server.pid)
        assert end - warm < SLACK_MIB, f"resident memory grew from {warm:.0f} MiB to {end:.0f} MiB over {MORE_ROUNDS} more rounds"
    finally:
        server.stop()
