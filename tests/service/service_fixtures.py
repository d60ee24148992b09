"""Helpers shared by the service and web tests (plain functions, importable from both)."""

from __future__ import annotations

import io
import socket
from pathlib import Path
from typing import Any

from PIL import Image

from atelier.config import Settings


def make_settings(data_dir: Path, models_dir: Path, **overrides: Any) -> Settings:
    """Settings on ``data_dir`` with the real weights and sizes fit for 2 cores."""
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "models_dir": models_dir,
        "device": "cpu",
        "instant_max_size": 256,
        "instant_batch_window_ms": 10.0,
        "preview_max_size": 96,
        "lease_seconds": 30,
        "workers": 0,
    }
    values.update(overrides)
    return Settings(**values)


def small_jpeg(path: Path, longest: int, *, quality: int = 90) -> bytes:
    """The image at ``path`` scaled to ``longest`` pixels on its longest side, as JPEG bytes."""
    with Image.open(path) as image:
        image = image.convert("RGB")
        image.thumbnail((longest, longest), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=quality)
        return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
