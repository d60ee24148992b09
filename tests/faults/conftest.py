"""Fixtures of the fault tests: the helpers in fault_fixtures.py and those of the service, web
and store tests, importable by name."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import fault_fixtures  # noqa: E402,F401 - puts the other test folders on the path
