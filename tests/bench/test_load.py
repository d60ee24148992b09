"""`atelier bench load`, short: 8 asyncio clients for 10 s against a real `atelier serve` on
loopback, mixing uploads, stylize calls and status polls. No answer is a 5xx, no request fails
in transport, every kind is measured (p50 and p99), and the server's memory is flat over the
window (the caches and concurrency's high-water mark were reached in the warm-up; what still
grows is a leak)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from atelier.bench.load import MIX, KindFigures
from atelier.cli import _register, app

pytestmark = pytest.mark.slow


def test_percentiles_of_a_kind_are_in_milliseconds() -> None:
    figures = KindFigures(latencies=[i / 1000 for i in range(1, 101)])  # 1..100 ms
    assert figures.percentile(50) == pytest.approx(50.5, abs=0.6)
    assert figures.percentile(99) == pytest.approx(99.0, abs=1.1)
    assert math.isnan(KindFigures().percentile(99))


def test_a_short_load_gets_no_5xx_and_leaves_memory_flat(models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from atelier.config import get_settings

    monkeypatch.setenv("ATELIER_MODELS_DIR", str(models_dir))
    get_settings.cache_clear()
    _register()
    result = CliRunner().invoke(app, ["bench", "load", "--clients", "8", "--seconds", "10", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])

    assert summary["server_errors"] == 0 and summary["transport_failures"] == 0, summary
    for kind in MIX:
        figures = summary["kinds"][kind]
        assert figures["requests"] > 0, (kind, summary)
        assert set(figures["statuses"]) <= {"200", "201"}, (kind, figures)
        assert 0 < figures["p50_ms"] <= figures["p99_ms"] <= figures["max_ms"]
    rss = summary["rss_mb"]
    assert rss["start"] and rss["middle"] and rss["end"]
    # Flat: after the warm-up the server grows by less than a tenth (or 32 MiB) in the window.
    assert rss["end"] - rss["start"] < max(32.0, 0.10 * rss["start"]), rss
