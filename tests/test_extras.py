"""Optional packages: a missing one is one line naming `pip install 'atelier[EXTRA]'`, at every
place that imports one, and the server refuses at start what its settings would need."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from atelier.config import Settings
from atelier.extras import EXTRAS, MissingExtraError, missing_for, need

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def without(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Make packages unimportable, as on a base install (None in sys.modules stops an import)."""

    def block(*names: str) -> None:
        for name in names:
            for loaded in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
                monkeypatch.delitem(sys.modules, loaded)
            monkeypatch.setitem(sys.modules, name, None)

    return block


def test_need_names_the_extra_that_installs_a_missing_package(without) -> None:  # type: ignore[no-untyped-def]
    without("stripe")
    with pytest.raises(MissingExtraError) as caught:
        need("stripe")
    message = str(caught.value)
    assert "pip install 'atelier[payments]'" in message and "\n" not in message
    assert isinstance(caught.value, ImportError)  # code that catches ImportError still does


def test_need_of_a_submodule_names_its_package_extra(without) -> None:  # type: ignore[no-untyped-def]
    without("botocore")
    with pytest.raises(MissingExtraError, match=r"atelier\[s3\]"):
        need("botocore.config")


def test_need_imports_an_installed_package() -> None:
    assert need("psycopg").__name__ == "psycopg"


def test_every_optional_package_has_an_extra_in_pyproject() -> None:
    import tomllib

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for extra in EXTRAS.values():
        assert extra.extra in extras, extra
        assert extra.extra in extras["all"][0], f"atelier[all] should include {extra.extra}"


def test_the_settings_say_which_extras_they_need(without) -> None:  # type: ignore[no-untyped-def]
    without("psycopg", "boto3", "stripe", "geoip2")
    plain = Settings()
    assert missing_for(plain) is None  # the embedded default needs none
    big = Settings(
        database_url="postgresql+psycopg://127.0.0.1/x",
        storage_url="s3://bucket/prefix",
        stripe_secret_key="sk_test_x",
        geoip_database=Path("/nonexistent.mmdb"),
    )
    missing = missing_for(big)
    assert missing is not None
    assert "pip install 'atelier[geoip,payments,postgres,s3]'" in str(missing)


def test_make_engine_on_postgres_without_psycopg_names_the_extra(without) -> None:  # type: ignore[no-untyped-def]
    from atelier.store.db import make_engine

    without("psycopg")
    with pytest.raises(MissingExtraError, match=r"atelier\[postgres\]"):
        make_engine("postgresql://127.0.0.1/test")


def test_s3_storage_without_boto3_names_the_extra(without) -> None:  # type: ignore[no-untyped-def]
    from atelier.store.blobs import blob_store_from_url

    without("boto3", "botocore")
    with pytest.raises(MissingExtraError, match=r"atelier\[s3\]"):
        blob_store_from_url("s3://bucket/prefix", signing_key=b"k" * 32, public_url="http://x/blobs")


def _atelier_without(packages: list[str], args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # A fresh interpreter where the packages cannot be imported, running the real entry point.
    code = (
        "import sys\n"
        f"for name in {packages!r}: sys.modules[name] = None\n"
        f"sys.argv = ['atelier', *{args!r}]\n"
        "from atelier.cli import main\n"
        "main()\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **env}, timeout=300)


@pytest.mark.parametrize(
    ("packages", "args", "env", "extra"),
    [
        (["psycopg"], ["db", "upgrade"], {"ATELIER_DATABASE_URL": "postgresql://127.0.0.1:5432/test"}, "postgres"),
        (["psycopg"], ["serve", "--port", "0"], {"ATELIER_DATABASE_URL": "postgresql://127.0.0.1:5432/test"}, "postgres"),
        (["boto3", "botocore"], ["serve", "--port", "0"], {"ATELIER_STORAGE_URL": "s3://bucket/x"}, "s3"),
        (["stripe"], ["serve", "--port", "0"], {"ATELIER_STRIPE_SECRET_KEY": "sk_test_x"}, "payments"),
        (["boto3", "botocore"], ["reconcile"], {"ATELIER_STORAGE_URL": "s3://bucket/x"}, "s3"),
    ],
    ids=["db-upgrade-postgres", "serve-postgres", "serve-s3", "serve-stripe", "reconcile-s3"],
)
def test_a_command_that_needs_a_missing_extra_says_so_in_one_line(
    packages: list[str], args: list[str], env: dict[str, str], extra: str, tmp_path: Path
) -> None:
    done = _atelier_without(packages, args, {"ATELIER_DATA_DIR": str(tmp_path), **env})
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"pip install 'atelier[{extra}]'" in lines[0]
