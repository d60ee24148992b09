"""`atelier settings`: the effective settings, their sources, secrets masked."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ATELIER = [sys.executable, "-c", "from atelier.cli import main; main()"]


def _atelier(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ATELIER_") or k == "ATELIER_DATA_DIR"}
    return subprocess.run([*ATELIER, *args], capture_output=True, text=True, env={**clean, **env}, timeout=120)


_ROW = re.compile(r"^(ATELIER_\w+)\s+(env file|env|default)\s+(.*)$")


def _row(line: str) -> tuple[str, tuple[str, str]]:
    match = _ROW.match(line)
    assert match, line
    return match.group(1), (match.group(2), match.group(3))


def test_settings_prints_values_sources_and_masks_secrets(tmp_path: Path) -> None:
    env_file = tmp_path / "production.env"
    env_file.write_text(
        "ATELIER_DATABASE_URL=postgresql+psycopg://atelier:s3cret-pw@db:5432/atelier\n"
        "ATELIER_STRIPE_WEBHOOK_SECRET=whsec_abcdef123456\n"
        "ATELIER_WORKERS=0\n"
        "ATELIER_WROKERS=3\n",
        encoding="utf-8",
    )
    result = _atelier("settings", env={"ATELIER_ENV_FILE": str(env_file), "ATELIER_PORT": "8080"})
    assert result.returncode == 0, result.stderr
    rows = dict(_row(line) for line in result.stdout.splitlines()[1:])
    assert result.stdout.splitlines()[0] == f"env file: {env_file}"
    assert rows["ATELIER_PORT"] == ("env", "8080")
    assert rows["ATELIER_WORKERS"] == ("env file", "0")
    assert rows["ATELIER_LEASE_SECONDS"] == ("default", "60")
    assert rows["ATELIER_DATABASE_URL"] == ("env file", "postgresql+psycopg://atelier:********@db:5432/atelier")
    assert rows["ATELIER_STRIPE_WEBHOOK_SECRET"] == ("env file", "********")
    assert rows["ATELIER_SMTP_URL"] == ("default", "(unset)")
    assert "s3cret-pw" not in result.stdout and "whsec_abcdef123456" not in result.stdout
    assert "ATELIER_WROKERS" in result.stderr and "not a setting" in result.stderr


def test_settings_json_and_changed_only(tmp_path: Path) -> None:
    env_file = tmp_path / "staging.env"
    env_file.write_text("ATELIER_ADMIN_TOKEN=token-of-the-operator\nATELIER_PREVIEW_MAX_SIZE=256\n", encoding="utf-8")
    result = _atelier("settings", "--json", "--changed", env={"ATELIER_ENV_FILE": str(env_file)})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["env_file"] == str(env_file)
    by_name = {s["variable"]: s for s in report["settings"]}
    assert by_name["ATELIER_PREVIEW_MAX_SIZE"] == {
        "variable": "ATELIER_PREVIEW_MAX_SIZE", "value": "256", "source": "env file", "secret": False,
    }
    assert by_name["ATELIER_ADMIN_TOKEN"]["value"] == "********" and by_name["ATELIER_ADMIN_TOKEN"]["secret"]
    assert "token-of-the-operator" not in result.stdout
    # --changed: the data dir comes from the environment, everything else shown is from the file
    assert {s["source"] for s in report["settings"]} <= {"env", "env file"}
    assert "ATELIER_LEASE_SECONDS" not in by_name


def test_a_missing_env_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = _atelier("settings", env={"ATELIER_ENV_FILE": str(tmp_path / "nope.env")})
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: ATELIER_ENV_FILE={tmp_path / 'nope.env'}: no such file"


def test_a_bad_value_is_one_line_naming_the_variable(tmp_path: Path) -> None:
    result = _atelier("settings", env={"ATELIER_DEVICE": "tpu"})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: settings not valid") and "ATELIER_DEVICE" in lines[0]
