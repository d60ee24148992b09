"""The settings object: environment variables, defaults and documentation."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from atelier.config import Settings, SettingsError, get_settings, load_settings
from atelier.config_report import MASK, is_secret, settings_report

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


# --- a .env file (ATELIER_ENV_FILE) beside the environment ---------------------------------------


def _env_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "staging.env"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_dotenv_file_named_by_atelier_env_file_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = _env_file(tmp_path, "# staging\nATELIER_DEVICE=cpu\nATELIER_PORT=9123\nATELIER_TRUSTED_PROXIES=10.0.0.0/8, 10.1.2.3\n")
    monkeypatch.setenv("ATELIER_ENV_FILE", str(path))
    for name in ("ATELIER_DEVICE", "ATELIER_PORT", "ATELIER_TRUSTED_PROXIES"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    settings = get_settings()
    assert settings.device == "cpu" and settings.port == 9123
    assert settings.trusted_proxies == ("10.0.0.0/8", "10.1.2.3")


def test_the_environment_wins_over_the_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = _env_file(tmp_path, "ATELIER_PORT=9123\nATELIER_HOST=0.0.0.0\n")
    monkeypatch.setenv("ATELIER_PORT", "9999")
    monkeypatch.delenv("ATELIER_HOST", raising=False)
    settings = load_settings(path)
    assert settings.port == 9999 and settings.host == "0.0.0.0"


def test_a_missing_env_file_is_refused_not_skipped(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ATELIER_ENV_FILE", str(tmp_path / "prod.env"))
    get_settings.cache_clear()
    with pytest.raises(SettingsError, match="prod.env: no such file"):
        get_settings()


def test_a_bad_value_in_the_file_names_the_variable(tmp_path: Path) -> None:
    path = _env_file(tmp_path, "ATELIER_LEASE_SECONDS=soon\n")
    with pytest.raises(SettingsError, match=r"staging.env.*ATELIER_LEASE_SECONDS: .*integer"):
        load_settings(path)


# --- the report behind `atelier settings` -----------------------------------------------------------


def test_the_report_says_where_each_value_came_from(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = _env_file(tmp_path, "ATELIER_PORT=9123\nATELIER_HOST=0.0.0.0\n")
    monkeypatch.setenv("ATELIER_HOST", "127.0.0.2")
    monkeypatch.delenv("ATELIER_PORT", raising=False)
    monkeypatch.delenv("ATELIER_LEASE_SECONDS", raising=False)
    values = {v.variable: v for v in settings_report(path).values}
    assert (values["ATELIER_PORT"].value, values["ATELIER_PORT"].source) == ("9123", "env file")
    assert (values["ATELIER_HOST"].value, values["ATELIER_HOST"].source) == ("127.0.0.2", "env")
    assert (values["ATELIER_LEASE_SECONDS"].value, values["ATELIER_LEASE_SECONDS"].source) == ("60", "default")
    assert set(values) == {f"ATELIER_{n.upper()}" for n in Settings.model_fields}


def test_the_report_masks_secrets_and_url_passwords(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = _env_file(
        tmp_path,
        "ATELIER_STRIPE_SECRET_KEY=sk_test_51abcdef\n"
        "ATELIER_DATABASE_URL=postgresql+psycopg://atelier:hunter2@db.internal:5432/atelier\n"
        "ATELIER_SMTP_URL=smtp://mailer:pa55word@smtp.internal:587\n",
    )
    monkeypatch.setenv("ATELIER_ADMIN_TOKEN", "correct-horse-battery-staple")
    for name in ("ATELIER_STRIPE_SECRET_KEY", "ATELIER_DATABASE_URL", "ATELIER_SMTP_URL"):
        monkeypatch.delenv(name, raising=False)
    report = settings_report(path)
    shown = "\n".join(f"{v.variable}={v.value}" for v in report.values)
    for secret in ("sk_test_51abcdef", "hunter2", "pa55word", "correct-horse-battery-staple"):
        assert secret not in shown
    values = {v.variable: v for v in report.values}
    assert values["ATELIER_STRIPE_SECRET_KEY"].value == MASK and values["ATELIER_STRIPE_SECRET_KEY"].secret
    assert values["ATELIER_ADMIN_TOKEN"].value == MASK and values["ATELIER_ADMIN_TOKEN"].source == "env"
    assert values["ATELIER_DATABASE_URL"].value == f"postgresql+psycopg://atelier:{MASK}@db.internal:5432/atelier"
    assert values["ATELIER_SMTP_URL"].value == f"smtp://mailer:{MASK}@smtp.internal:587"
    # an unset secret is shown as unset, not as a mask that suggests it has a value
    assert values["ATELIER_CAPTCHA_SECRET"].value == ""


def test_every_field_that_holds_a_secret_is_marked_so() -> None:
    # The names say secret, token or password: each of them must be masked by the report.
    for name in Settings.model_fields:
        if any(word in name for word in ("secret", "token", "password")):
            assert is_secret(name), name


def test_the_report_names_misspelt_variables_in_the_file(tmp_path: Path) -> None:
    path = _env_file(tmp_path, "ATELIER_DATABSE_URL=postgresql://x@y/z\nOTHER_TOOL=1\nATELIER_PORT=1\n")
    assert settings_report(path).unknown_in_file == ["ATELIER_DATABSE_URL"]
