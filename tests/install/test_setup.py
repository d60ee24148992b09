"""atelier.install.setup: what the default needs, fetched when missing, and one line when it
cannot be (offline)."""

from __future__ import annotations

import shutil
import urllib.error
from pathlib import Path

import pytest

from atelier.install import fetch
from atelier.install.setup import DEFAULT_MODELS, missing_defaults, setup
from atelier.install.styles import shipped_styles


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every request fails as it does without a network; the addresses asked for are kept."""
    asked: list[str] = []

    def no_network(request, timeout=None):  # type: ignore[no-untyped-def]
        asked.append(request.full_url)
        raise urllib.error.URLError(ConnectionRefusedError(111, "Connection refused"))

    monkeypatch.setattr(fetch.urllib.request, "urlopen", no_network)
    return asked


def _some_weights(models_dir: Path, dest: Path) -> Path:
    for relpath in ("microast", "fast_neural_style/candy.pth"):
        (dest / relpath).parent.mkdir(parents=True, exist_ok=True)
        source = models_dir / relpath
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, dest / relpath)
    return dest


def test_offline_the_first_unreachable_host_ends_the_fetching(offline: list[str], tmp_path: Path) -> None:
    report = setup(models_dir=tmp_path / "models", styles_dir=tmp_path / "styles", timeout=1)
    # One model's addresses were tried; nothing else waited out its own timeouts.
    assert offline and all(url in offline[:3] for url in offline), offline
    assert not report.complete and "could not reach" in report.offline
    assert list(report.missing_models) == list(DEFAULT_MODELS)
    assert sorted(report.missing_styles) == sorted(s.name for s in shipped_styles())
    line = report.summary()
    assert "\n" not in line
    assert line.startswith("missing weights for microast, filter-candy") and "offline (could not reach" in line
    assert "nothing can paint yet" in line


def test_the_line_says_what_works_with_the_weights_that_are_there(offline: list[str], models_dir: Path, tmp_path: Path) -> None:
    some = _some_weights(models_dir, tmp_path / "models")
    report = setup(models_dir=some, styles_dir=tmp_path / "styles", timeout=1)
    assert report.present_models == ["microast", "filter-candy"]
    assert "microast" not in report.missing_models
    assert "serving what works: any painting as the style (MicroAST), the filters candy" in report.summary()


def test_an_import_only_model_is_never_asked_for(offline: list[str], tmp_path: Path) -> None:
    report = setup(models_dir=tmp_path / "models", styles_dir=tmp_path / "styles", model_names=["filter-pointilism"], with_styles=False)
    assert offline == []
    assert "atelier models import DIR" in report.missing_models["filter-pointilism"]


def test_everything_there_is_complete_and_fetches_nothing(offline: list[str], models_dir: Path, tmp_path: Path) -> None:
    some = _some_weights(models_dir, tmp_path / "models")
    report = setup(models_dir=some, styles_dir=tmp_path / "styles", model_names=["microast", "filter-candy"], with_styles=False)
    assert report.complete and offline == []
    assert report.summary().startswith("everything the default needs is installed")


def test_missing_defaults_only_looks(offline: list[str], tmp_path: Path) -> None:
    report = missing_defaults(models_dir=tmp_path / "models", styles_dir=tmp_path / "styles")
    assert offline == [] and not report.offline
    assert set(report.missing_models) == set(DEFAULT_MODELS)
