"""Process-wide allocator tuning: applied once, on glibc, and skippable for measurements."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

_PROBE = "from atelier import runtime; print(runtime.tune_allocator(), runtime.one_malloc_arena(), runtime.tune_allocator())"


def _probe(**env: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], env={**os.environ, **env}, capture_output=True, text=True, check=True, timeout=60
    )
    return done.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_the_tuning_takes_effect_on_glibc_and_is_idempotent() -> None:
    assert _probe() == "True True True"


def test_keep_malloc_defaults_skips_every_tweak() -> None:
    assert _probe(ATELIER_KEEP_MALLOC_DEFAULTS="1") == "False False False"
