"""One settings object for the whole product, read from ``ATELIER_*`` environment variables.

Every field carries a description: ``atelier settings`` (and the docs) are generated from them,
and a test checks that each one is documented.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "atelier"


class Settings(BaseSettings):
    """Atelier's settings. Each field is read from ``ATELIER_<FIELD NAME IN CAPITALS>``."""

    model_config = SettingsConfigDict(env_prefix="ATELIER_", extra="ignore", validate_default=True)

    data_dir: Path = Field(
        default_factory=_default_data_dir,
        description="Folder for everything Atelier keeps on this machine (database, images, "
        "outbox, models unless ATELIER_MODELS_DIR says otherwise). Default: "
        "$XDG_DATA_HOME/atelier or ~/.local/share/atelier.",
    )
    models_dir: Path | None = Field(
        default=None,
        description="Folder of model weights laid out as <family>/<official file name>. "
        "Default: <data dir>/models. `atelier models download` fills it.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto",
        description="Where the engines run: auto (CUDA when a GPU is usable, else CPU), cpu or cuda.",
    )
    max_image_pixels: int = Field(
        default=40_000_000,
        gt=0,
        description="Largest image accepted, in pixels (width x height), checked from the file "
        "header before decoding so that decompression bombs are refused cheaply.",
    )
    max_upload_bytes: int = Field(
        default=30 * 1024 * 1024,
        gt=0,
        description="Largest image file accepted, in bytes.",
    )
    threads: int = Field(
        default=0,
        ge=0,
        description="CPU threads for the engines; 0 lets PyTorch choose (one per core).",
    )

    @model_validator(mode="after")
    def _derive_dirs(self) -> Settings:
        self.data_dir = self.data_dir.expanduser()
        if self.models_dir is None:
            self.models_dir = self.data_dir / "models"
        else:
            self.models_dir = self.models_dir.expanduser()
        return self

    @property
    def models_path(self) -> Path:
        """The models folder, always set after validation."""
        assert self.models_dir is not None
        return self.models_dir


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
