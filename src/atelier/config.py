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


    # --- store -------------------------------------------------------------------------------
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the database. Default: an SQLite file atelier.db in the "
        "data dir. For scale: postgresql+psycopg://user:pass@host/dbname.",
    )
    storage_url: str | None = Field(
        default=None,
        description="Where images are kept: file:///path/to/folder (default: <data dir>/blobs) "
        "or s3://bucket/prefix for any S3-compatible store (see the ATELIER_S3_* settings).",
    )
    s3_endpoint_url: str | None = Field(
        default=None,
        description="Endpoint of the S3-compatible store (MinIO, R2, ...); unset for AWS S3.",
    )
    s3_region: str | None = Field(default=None, description="Region of the S3 bucket, e.g. eu-west-1.")
    s3_access_key_id: str | None = Field(
        default=None,
        description="S3 access key id; unset to use boto3's usual chain (environment, profile, role).",
    )
    s3_secret_access_key: str | None = Field(
        default=None, description="S3 secret access key, paired with ATELIER_S3_ACCESS_KEY_ID."
    )
    lease_seconds: int = Field(
        default=60,
        gt=0,
        description="How long a worker's claim on a job lasts without a heartbeat. A worker that "
        "dies is replaced after this long; the heartbeat renews it every third of it.",
    )
    temp_retention_hours: float = Field(
        default=24.0,
        gt=0,
        description="How long temporary blobs (instant uploads, unclaimed presigned uploads) are "
        "kept before `atelier reconcile --fix` deletes them.",
    )

    @model_validator(mode="after")
    def _derive_dirs(self) -> Settings:
        self.data_dir = self.data_dir.expanduser()
        if self.models_dir is None:
            self.models_dir = self.data_dir / "models"
        else:
            self.models_dir = self.models_dir.expanduser()
        if self.database_url is None:
            self.database_url = f"sqlite:///{self.data_dir / 'atelier.db'}"
        if self.storage_url is None:
            self.storage_url = (self.data_dir / "blobs").as_uri()
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
