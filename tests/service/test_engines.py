"""Naming and choosing the engines (atelier.service.engines): one rule for photos and clips."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from atelier.service.engines import UnknownEngineError, choose_engine
from atelier.service.errors import StyleChoiceError


def test_auto_is_the_filter_for_one_filter_name_and_microast_otherwise(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert choose_engine("auto", ["candy"]) == "filter"
    assert choose_engine("AUTO", ["Rain-Princess"]) == "filter"
    assert choose_engine("auto", ["starry.jpg"]) == "microast"
    assert choose_engine("auto", ["candy", "mosaic"]) == "microast"  # a blend is for a style engine
    # A file that happens to bear a filter's name is a painting.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "candy").write_bytes(b"")
    assert choose_engine("auto", ["candy"]) == "microast"
    assert choose_engine("adain", ["candy"]) == "adain"


def test_an_unknown_engine_or_no_style_is_refused() -> None:
    with pytest.raises(UnknownEngineError, match="unknown engine 'nope'; choose one of auto, microast, adain, filter"):
        choose_engine("nope", ["candy"])
    with pytest.raises(StyleChoiceError, match="give a style"):
        choose_engine("auto", [])


def test_naming_the_engines_imports_no_torch() -> None:
    # atelier render's help lists them without paying for torch.
    code = "import sys, atelier.service.engines, atelier.cli.render; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "False"
