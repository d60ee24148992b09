"""The package as a new user installs it: `pip install <checkout>` with no extras into a clean
virtual environment, then the command line and the server from that environment alone.

This is the CI step of issue 17 (scripts/test runs it with the rest of the suite). The venv is
built once per pyproject.toml + constraints.txt (torch pinned to the CPU build by constraints.txt,
as scripts/setup does) and kept in ``.venv-clean/`` (``ATELIER_CLEAN_VENV`` moves it); each run
reinstalls only Atelier itself, from a copy of the checkout's files (tracked and new, not
ignored ones), so nothing of the working tree's build leftovers or editable install leaks in.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OPTIONAL = ("psycopg", "boto3", "stripe", "geoip2", "httpx")

pytestmark = pytest.mark.slow


def _run(args: list[str], **kwargs) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    done = subprocess.run(args, capture_output=True, text=True, **kwargs)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def _checkout_copy(dest: Path) -> Path:
    """The checkout's files as git sees them (tracked, and new files not ignored)."""
    listed = _run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO).stdout.split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


@pytest.fixture(scope="module")
def clean_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = Path(os.environ.get("ATELIER_CLEAN_VENV", REPO / ".venv-clean"))
    key = hashlib.sha256((REPO / "pyproject.toml").read_bytes() + (REPO / "constraints.txt").read_bytes()).hexdigest()[:16]
    venv = home / key
    python = venv / "bin" / "python"
    source = _checkout_copy(tmp_path_factory.mktemp("checkout"))
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-c", str(REPO / "constraints.txt")]
    if not (venv / ".complete").is_file():
        shutil.rmtree(venv, ignore_errors=True)
        for old in home.glob("*") if home.is_dir() else ():
            shutil.rmtree(old, ignore_errors=True)  # venvs of older pyproject.toml files
        _run([sys.executable, "-m", "venv", str(venv)])
        _run([*pip, str(source)], timeout=1800)
        (venv / ".complete").write_text(key)
    else:
        _run([*pip, "--no-deps", "--force-reinstall", str(source)], timeout=600)
    return venv


def _env(tmp_path: Path, models_dir: Path) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith("ATELIER_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**keep, "ATELIER_DATA_DIR": str(tmp_path / "data"), "ATELIER_MODELS_DIR": str(models_dir)}


def test_the_base_install_has_no_optional_package(clean_venv: Path) -> None:
    code = f"import importlib.util as u, json; print(json.dumps([m for m in {OPTIONAL!r} if u.find_spec(m)]))"
    found = json.loads(_run([str(clean_venv / "bin" / "python"), "-c", code]).stdout)
    assert found == [], f"the clean venv should have no extras, but has {found}"
    # And Atelier comes from the venv itself, not from the checkout.
    where = _run([str(clean_venv / "bin" / "python"), "-c", "import atelier; print(atelier.__file__)"], cwd="/").stdout
    assert where.startswith(str(clean_venv)), where


def test_render_a_filter_and_a_painting_from_the_base_install(
    clean_venv: Path, tmp_path: Path, models_dir: Path, content_dir: Path, style_dir: Path
) -> None:
    atelier = str(clean_venv / "bin" / "atelier")
    env = _env(tmp_path, models_dir)
    photo = content_dir / "dog.jpg"
    _run([atelier, "render", str(photo), "--style", "candy", "--size", "128", "-o", str(tmp_path / "candy.png")], env=env, timeout=600)
    _run([atelier, "render", str(photo), "--style", str(style_dir / "starry_night.jpg"), "--size", "128", "-o", str(tmp_path / "starry.jpg")], env=env, timeout=600)
    from PIL import Image

    for name in ("candy.png", "starry.jpg"):
        with Image.open(tmp_path / name) as picture:
            assert picture.size == (128, 96)


def test_render_a_clip_from_the_base_install(clean_venv: Path, tmp_path: Path, models_dir: Path, shared_dir: Path) -> None:
    atelier = str(clean_venv / "bin" / "atelier")
    clip = shared_dir / "video" / "cutBunny.mp4"
    out = tmp_path / "clip.mp4"
    _run([atelier, "render", str(clip), "--style", "candy", "--size", "64", "--max-seconds", "0.3", "-o", str(out)], env=_env(tmp_path, models_dir), timeout=600)
    assert out.stat().st_size > 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def server(clean_venv: Path, tmp_path: Path, models_dir: Path) -> Iterator[str]:
    port = _free_port()
    log = (tmp_path / "serve.log").open("w")
    process = subprocess.Popen(
        [str(clean_venv / "bin" / "atelier"), "serve", "--port", str(port)],
        env=_env(tmp_path, models_dir), stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def test_serve_from_the_base_install_answers_readyz(server: str, tmp_path: Path) -> None:
    deadline = time.monotonic() + 300
    answer = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{server}/readyz", timeout=10) as response:
                answer = (response.status, json.loads(response.read()))
                break
        except urllib.error.HTTPError as exc:  # answered, but not ready: say why
            answer = (exc.code, exc.read().decode(errors="replace"))
            break
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    assert answer is not None, (tmp_path / "serve.log").read_text()[-3000:]
    status, body = answer
    assert status == 200, body
    with urllib.request.urlopen(f"{server}/", timeout=30) as page:
        assert page.status == 200 and b"<html" in page.read(2000).lower()
