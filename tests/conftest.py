"""Fixtures shared by the whole suite: where the real weights and images from ../shared are."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ATELIER_TEST_SHARED_DIR", REPO.parent / "shared"))


def _shared(sub: str) -> Path:
    path = SHARED / sub
    if not path.exists():
        pytest.fail(f"test data missing: {path} (the suite reads ../shared; see README 'Tests')")
    return path


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """The real weights, in the official formats (../shared/models)."""
    return Path(os.environ.get("ATELIER_TEST_MODELS_DIR") or _shared("models"))


@pytest.fixture(scope="session")
def content_dir() -> Path:
    return _shared("images/content")


@pytest.fixture(scope="session")
def style_dir() -> Path:
    return _shared("images/style")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return SHARED


@pytest.fixture(autouse=True)
def _isolated_settings(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads or writes the user's real data folder."""
    data = tmp_path_factory.mktemp("atelier-data")
    monkeypatch.setenv("ATELIER_DATA_DIR", str(data))
    from atelier.config import get_settings

    get_settings.cache_clear()
