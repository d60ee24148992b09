"""``scripts/run`` on a machine without internet (issue 17): it says in one line what is missing,
the server starts anyway and paints with the weights that are there.

"Without internet" is made real for the child processes: every HTTP(S) request goes through a
proxy address where nothing listens, so each download fails as an unreachable host does
(connection refused), whatever the machine running the tests can reach.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


#: Talks to the local server without any proxy from the environment.
_LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _get(url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with _LOCAL.open(request, timeout=120) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[bytes, dict[str, str]]:
    boundary = "atelier-test-boundary"
    body = io.BytesIO()
    for name, value in fields.items():
        body.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, (filename, data) in files.items():
        body.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                   "Content-Type: image/jpeg\r\n\r\n".encode() + data + b"\r\n")
    body.write(f"--{boundary}--\r\n".encode())
    return body.getvalue(), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


class Run:
    """``scripts/run`` as a user starts it, offline, on a fresh data folder."""

    def __init__(self, tmp_path: Path, models: Path) -> None:
        self.port = _closed_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp_path / "run.log"
        nowhere = f"http://127.0.0.1:{_closed_port()}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("ATELIER_") and k.lower() not in ("no_proxy",)}
        env |= {
            "ATELIER_DATA_DIR": str(tmp_path / "data"), "ATELIER_MODELS_DIR": str(models), "ATELIER_PORT": str(self.port),
            "http_proxy": nowhere, "https_proxy": nowhere, "HTTP_PROXY": nowhere, "HTTPS_PROXY": nowhere,
        }
        self._out = self.log.open("w")
        self.process = subprocess.Popen([str(REPO / "scripts" / "run")], env=env, stdout=self._out, stderr=subprocess.STDOUT)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.text()
            try:
                if _get(self.url + "/healthz")[0] == 200:
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.5)
        raise AssertionError(f"the server did not start:\n{self.text()}")

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def setup_lines(self) -> list[str]:
        """What `atelier setup` said: the lines before the server's own log begins."""
        lines = []
        for line in self.text().splitlines():
            if "atelier.cli.serve" in line or line.startswith("INFO:"):
                break
            lines.append(line)
        # scripts/setup's own line (and pip's warnings) when it installs .venv first, before
        # `atelier setup` runs, are not setup's to count.
        return [line for line in lines if line.strip() and not line.startswith(("scripts/setup:", "WARNING:", "  "))]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._out.close()


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Any]:
    started: list[Run] = []

    def start(models: Path) -> Run:
        started.append(Run(tmp_path, models))
        started[-1].wait_ready()
        return started[-1]

    yield start
    for one in started:
        one.stop()


def _photo(content_dir: Path) -> bytes:
    with Image.open(content_dir / "dog.jpg") as image:
        image.thumbnail((128, 128))
        out = io.BytesIO()
        image.convert("RGB").save(out, "JPEG")
        return out.getvalue()


def test_offline_with_an_empty_models_folder_says_what_is_missing_and_serves(run, tmp_path: Path, content_dir: Path) -> None:  # type: ignore[no-untyped-def]
    empty = tmp_path / "models"
    empty.mkdir()
    site = run(empty)
    said = site.setup_lines()
    assert len(said) == 1, said
    assert "missing weights for microast, filter-candy" in said[0] and "offline" in said[0], said
    assert "nothing can paint yet" in said[0]
    assert "Traceback" not in site.text()
    # The pages answer; the instant page offers no filter it cannot paint, and the commission
    # page is not empty: it names the catalog's paintings still to be downloaded.
    status, home = _get(site.url + "/en/")
    assert status == 200 and b'id="style-candy"' not in home
    status, commission = _get(site.url + "/en/commission")
    assert status == 200 and b"The Starry Night" in commission
    # Painting says what to install, and how.
    body, headers = _multipart({"style_name": "candy", "size": "64"}, {"content": ("dog.jpg", _photo(content_dir))})
    status, answer = _get(site.url + "/api/v1/stylize", body, headers)
    assert status == 503, answer
    assert "atelier models download filter-candy" in json.loads(answer)["error"]["message"]


def test_offline_with_some_weights_paints_with_what_is_there(run, tmp_path: Path, models_dir: Path, content_dir: Path, style_dir: Path) -> None:  # type: ignore[no-untyped-def]
    some = tmp_path / "models"
    for relpath in ("microast", "fast_neural_style/candy.pth"):
        source, dest = models_dir / relpath, some / relpath
        dest.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, dest)
    site = run(some)
    said = site.setup_lines()
    assert len(said) == 1, said
    assert "missing weights for filter-mosaic" in said[0] and "microast," not in said[0], said
    assert "serving what works: any painting as the style (MicroAST), the filters candy" in said[0]
    status, ready = _get(site.url + "/readyz")
    assert status == 200, ready
    status, home = _get(site.url + "/en/")
    assert b'id="style-candy"' in home and b'id="style-mosaic"' not in home
    photo = _photo(content_dir)
    body, headers = _multipart({"style_name": "candy", "size": "64"}, {"content": ("dog.jpg", photo)})
    status, candy = _get(site.url + "/api/v1/stylize", body, headers)
    assert status == 200, candy
    with open(style_dir / "starry_night.jpg", "rb") as painting:
        body, headers = _multipart({"size": "64"}, {"content": ("dog.jpg", photo), "style": ("starry.jpg", painting.read())})
    status, painted = _get(site.url + "/api/v1/stylize", body, headers)
    assert status == 200, painted
    with Image.open(io.BytesIO(painted)) as picture:
        assert max(picture.size) == 64
