"""The engines' encodings as batches: their cost in bytes, stacked into one batch and back."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from atelier.service.encodings import nbytes, stack, unstack
from atelier.service.engines import EngineLoader


def test_nbytes_walks_nested_dataclasses_of_tensors(models_dir: Path) -> None:
    engine = EngineLoader(models_dir=models_dir, device=torch.device("cpu")).style_engine("microast")
    encoded = engine.encode_content(torch.rand(1, 3, 32, 48))
    assert nbytes(encoded) == 64 * 8 * 12 * 4 + 8 * 64 * 4


def test_stack_concatenates_engine_batches_and_refuses_different_sizes(models_dir: Path) -> None:
    engine = EngineLoader(models_dir=models_dir, device=torch.device("cpu")).style_engine("microast")
    a = engine.encode_content(torch.rand(1, 3, 32, 32))
    b = engine.encode_content(torch.rand(1, 3, 32, 32))
    both = stack([a, b])
    assert both.batch == 2 and both.own_style.mean1.shape[0] == 2
    c = engine.encode_content(torch.rand(1, 3, 32, 40))
    with pytest.raises((ValueError, RuntimeError)):
        stack([a, c])


def test_unstack_undoes_stack(models_dir: Path) -> None:
    engine = EngineLoader(models_dir=models_dir, device=torch.device("cpu")).style_engine("microast")
    photos = torch.rand(3, 3, 32, 40)
    together = engine.encode_content(photos)
    apart = unstack(together, 3)
    alone = engine.encode_content(photos[1:2])
    assert apart[1].batch == 1 and apart[1].size == alone.size
    assert torch.allclose(apart[1].features, alone.features, atol=1e-5)
    assert torch.allclose(apart[1].own_style.mean1, alone.own_style.mean1, atol=1e-5)
    assert torch.equal(stack(apart).features, together.features)
