"""`atelier bench`: the performance record's shape (not its speeds), JSON for machines on every
group, and one-line refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from atelier.bench.record import GROUPS, QUICK
from atelier.bench.service import bench_service
from atelier.cli import _register, app

_register()
runner = CliRunner()

ROW_KEYS = {"group", "name", "seconds", "items", "unit", "per_second", "peak_mb", "params", "ratios", "note", "baseline_seconds", "figures"}


@pytest.fixture(autouse=True)
def _models(models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATELIER_MODELS_DIR", str(models_dir))
    monkeypatch.setenv("ATELIER_DEVICE", "cpu")
    from atelier.config import get_settings

    get_settings.cache_clear()


def _json_lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_a_quick_record_prints_one_json_row_per_figure_each_beside_its_baseline(tmp_path: Path) -> None:
    out = tmp_path / "record.json"
    result = runner.invoke(app, ["bench", "record", "--quick", "--groups", "adain,filter,waifu2x", "--json", "-o", str(out)])
    assert result.exit_code == 0, result.output
    rows = _json_lines(result.output)
    assert [(r["group"], r["name"]) for r in rows] == [
        ("adain", "AdaIN, new style"),
        ("adain", "AdaIN, style cached"),
        ("filter", "filter (candy)"),
        ("waifu2x", "waifu2x upconv_7_photo 2x"),
    ]
    for row in rows:
        assert set(row) == ROW_KEYS
        assert row["seconds"] > 0 and row["peak_mb"] > 0
        assert row["figures"]["cpu_seconds"] >= 0
    for row in rows:
        assert row["baseline_seconds"] > 0
        assert row["ratios"]["vs baseline"] == pytest.approx(row["baseline_seconds"] / row["seconds"])
    assert rows[0]["params"]["content"] == f"{QUICK.adain[0]}x{QUICK.adain[0]}"
    assert rows[3]["figures"]["input_megapixels_per_s"] > 0
    document = json.loads(out.read_text())
    assert document["plan"] == "quick"
    assert "bench record" in document["command"]
    assert document["rows"] == rows


def test_the_record_table_has_the_baseline_column(tmp_path: Path) -> None:
    result = runner.invoke(app, ["bench", "record", "--quick", "--groups", "filter"])
    assert result.exit_code == 0, result.output
    assert "baseline s" in result.output
    assert "filter (candy)" in result.output
    assert "Performance record on" in result.output


def test_an_unknown_group_is_refused_in_one_line() -> None:
    result = runner.invoke(app, ["bench", "record", "--groups", "adain,teleport"])
    assert result.exit_code == 2
    assert "teleport" in result.output
    assert len([line for line in result.output.splitlines() if line.strip()]) == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: --device cuda is accepted here")
@pytest.mark.parametrize("group", ["record", "engines", "gatys", "service", "video"])
def test_device_cuda_without_a_gpu_is_refused_in_one_line(group: str) -> None:
    result = runner.invoke(app, ["bench", group, "--device", "cuda"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "cuda" in lines[0].lower(), result.output


@pytest.mark.parametrize("group", ["record", "engines", "gatys", "service", "video", "queue", "load"])
def test_every_group_speaks_json(group: str) -> None:
    result = runner.invoke(app, ["bench", group, "--help"])
    assert result.exit_code == 0
    assert "--json" in result.output


def test_the_record_covers_the_issue_table() -> None:
    assert set(GROUPS) == {"adain", "filter", "gatys", "microast", "waifu2x", "service", "video"}


def test_the_service_bench_reports_p50_p99_and_images_per_second_for_each_client_count(models_dir: Path) -> None:
    rows = list(
        bench_service(
            models_dir=models_dir, clients=(1, 2), seconds=1.0, size=64, kinds=("fresh",), modes=("batched",),
            first_vs_repick_repeats=0, device="cpu",
        )
    )
    assert [r.params["clients"] for r in rows] == [1, 2]
    for row in rows:
        assert row.items > 0, row.note
        assert row.figures["errors"] == 0
        assert 0 < row.figures["p50_ms"] <= row.figures["p99_ms"]
        assert row.figures["images_per_s"] == pytest.approx(row.per_second)
        assert row.figures["mean_batch"] >= 1
        assert row.peak_mb is not None and row.peak_mb > 100  # the server process: torch and the weights
    assert "vs 1 client" in rows[1].ratios


def test_bare_atelier_bench_runs_the_whole_record(monkeypatch: pytest.MonkeyPatch) -> None:
    # The full record takes minutes: record what the command asks for instead of measuring.
    import atelier.bench.record as record

    asked: dict = {}

    def bench_record(loader, *, plan, groups, threads):  # type: ignore[no-untyped-def]
        asked.update(plan=plan, groups=list(groups))
        return iter([])

    monkeypatch.setattr(record, "bench_record", bench_record)
    result = runner.invoke(app, ["bench"])
    assert result.exit_code == 0, result.output
    assert asked == {"plan": record.FULL, "groups": list(GROUPS)}


def test_the_record_prints_a_markdown_table_for_the_docs() -> None:
    result = runner.invoke(app, ["bench", "record", "--quick", "--groups", "filter", "--markdown"])
    assert result.exit_code == 0, result.output
    table = [line for line in result.output.splitlines() if line.startswith("|")]
    assert table[0].startswith("| group | what |")
    assert len(table) == 3  # header, rule, the filter's row
    cells = [c.strip() for c in table[2].strip("|").split("|")]
    assert cells[:3] == ["filter", "filter (candy)", f"{QUICK.filter[0]}x{QUICK.filter[0]}"]
    assert cells[7].endswith("x")  # wall / CPU ratios


def test_gatys_times_each_backend_once_even_when_two_names_resolve_to_it() -> None:
    from atelier.art.engines.gatys import resolve_backend

    result = runner.invoke(
        app,
        ["bench", "gatys", "--sizes", "32", "--optimizers", "adam", "--iterations", "2", "--rounds", "1",
         "--memory-size", "0", "--backends", "auto,onednn", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    names = [row["name"] for row in _json_lines(result.output)]
    expected = {f"atelier {resolve_backend('auto', torch.device('cpu'))} (adam)", "atelier onednn (adam)"}
    assert names.count("textbook loop (adam)") == 1 and "compute floor" in names
    assert sorted(n for n in names if n.startswith("atelier")) == sorted(expected)
