"""The settings object: environment variables, defaults and documentation."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from atelier.config import Settings

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_setting_has_a_description() -> None:
    for name, field in Settings.model_fields.items():
        assert field.description and len(field.description) > 15, name


def test_every_setting_is_documented_in_the_readme() -> None:
    text = README.read_text(encoding="utf-8")
    missing = [f"ATELIER_{n.upper()}" for n in Settings.model_fields if f"ATELIER_{n.upper()}" not in text]
    assert not missing, f"README does not document {missing}"


def test_models_dir_defaults_to_the_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ATELIER_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("ATELIER_MODELS_DIR", raising=False)
    assert Settings().models_path == tmp_path / "models"


def test_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ATELIER_MODELS_DIR", str(tmp_path / "weights"))
    monkeypatch.setenv("ATELIER_DEVICE", "cpu")
    settings = Settings()
    assert settings.models_path == tmp_path / "weights"
    assert settings.device == "cpu"


def test_a_bad_device_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATELIER_DEVICE", "tpu")
    with pytest.raises(ValidationError):
        Settings()
