"""A damaged SQLite file under a real `atelier serve`: a broken header stops the start with one
line that names the file and what to do; a damaged table page lets the server start but
/readyz says the database is damaged, and what cannot be read answers 503 -- JSON on the API,
a page on the pages -- never a JSON 500. `atelier db check` says what is wrong either way."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import httpx
import pytest

from atelier.service.artworks import order_artwork
from atelier.service.context import Services

from tests.faults.fault_fixtures import ATELIER, Process, base_env, wait_until
from tests.service.service_fixtures import add_catalog_style, free_port, make_settings, small_jpeg

pytestmark = pytest.mark.slow


def _database_with_an_artwork(tmp_path: Path, models_dir: Path, content_dir: Path, style_dir: Path) -> tuple[Path, str, dict[str, str]]:
    data = tmp_path / "data"
    settings = make_settings(data, models_dir, styles_dir=tmp_path / "styles")
    add_catalog_style(settings, style_dir)
    services = Services.open(settings, public_url="http://atelier.test")
    try:
        view = order_artwork(services, style_name="starry_night", email="ana@example.com", locale="en", content=small_jpeg(content_dir / "dog.jpg", 160))
    finally:
        services.close()
    database = data / "atelier.db"
    with sqlite3.connect(database) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # everything in the main file
    env = base_env(models_dir, ATELIER_DATA_DIR=str(data), ATELIER_STYLES_DIR=str(tmp_path / "styles"))
    return database, view.id, env


def _damage_table(database: Path, table: str) -> None:
    with sqlite3.connect(database) as conn:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        root = conn.execute("SELECT rootpage FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone()[0]
    with open(database, "r+b") as out:
        out.seek((root - 1) * page_size)
        out.write(bytes([0xDE, 0xAD, 0xBE, 0xEF]) * (page_size // 4))


def _run(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ATELIER, *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_a_broken_header_stops_the_start_with_one_line_naming_the_file_and_the_fix(
    tmp_path: Path, models_dir: Path, content_dir: Path, style_dir: Path
) -> None:
    database, _, env = _database_with_an_artwork(tmp_path, models_dir, content_dir, style_dir)
    with open(database, "r+b") as out:
        out.write(b"this is not what SQLite wrote here" * 3)
    for command in (["serve", "--port", str(free_port())], ["worker"]):
        result = _run(command, env)
        output = result.stdout + result.stderr
        assert result.returncode == 2, output[-3000:]
        assert "Traceback" not in output, output[-3000:]
        lines = [line for line in output.splitlines() if str(database) in line]
        assert len(lines) == 1, output[-3000:]
        assert "damaged" in lines[0] and "backup" in lines[0] and "atelier db check" in lines[0]
    check = _run(["db", "check"], env)
    assert check.returncode == 1, check.stdout + check.stderr
    assert str(database) in check.stdout and "not a database" in check.stdout


def test_a_damaged_table_page_is_noticed_by_readyz_and_answered_503_not_a_json_500(
    tmp_path: Path, models_dir: Path, content_dir: Path, style_dir: Path
) -> None:
    database, public_id, env = _database_with_an_artwork(tmp_path, models_dir, content_dir, style_dir)
    _damage_table(database, "artworks")

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = Process("server", ["serve", "--port", str(port), "--workers", "0"], env, tmp_path / "server.log")
    try:
        def answers() -> httpx.Response | None:
            assert server.alive(), server.text()[-3000:]
            try:
                return httpx.get(f"{base}/readyz", timeout=10)
            except httpx.HTTPError:
                return None

        ready = wait_until(answers, seconds=90, what="/readyz answering")
        assert ready.status_code == 503, ready.text
        assert ready.json()["checks"]["database"].startswith("damaged"), ready.text
        assert "atelier db check" in ready.json()["checks"]["database"]
        with httpx.Client(base_url=base, timeout=30) as http:
            assert http.get("/healthz").status_code == 200
            api = http.get(f"/api/v1/artworks/{public_id}")
            assert api.status_code == 503 and api.json()["error"]["code"] == "unavailable", api.text
            page = http.get(f"/en/artworks/{public_id}", headers={"Accept": "text/html"})
            assert page.status_code == 503 and page.headers["content-type"].startswith("text/html"), page.text[:300]
            assert "<html" in page.text
        assert server.alive()
    finally:
        server.stop()
    assert "database file" in server.text() and "damaged" in server.text()
    check = _run(["db", "check"], env)
    assert check.returncode == 1, check.stdout + check.stderr
    assert "damaged" in check.stdout and "artworks" in check.stdout and "restore" in check.stdout
