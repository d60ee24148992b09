"""The engines' encodings as batches: what they cost in bytes, and stacking them into one batch
and back. Works on any engine's cache objects (tensors, dataclasses of them, nested) without
knowing them, so the instant service and the sheet can batch any engine."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch

from atelier.art.blocks.faces import Faces


def nbytes(value: Any) -> int:
    """Bytes held by the tensors in ``value`` (a tensor, a dataclass of them, or a sequence)."""
    if isinstance(value, torch.Tensor):
        return value.element_size() * value.nelement()
    if isinstance(value, Faces):  # a few boxes: counted so the byte budget still bounds them
        return 64 * (1 + len(value.faces) + len(value.eyes))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return sum(nbytes(getattr(value, f.name)) for f in dataclasses.fields(value))
    if isinstance(value, (list, tuple)):
        return sum(nbytes(v) for v in value)
    return 0


def stack(items: Sequence[Any]) -> Any:
    """Concatenate encoded batches along the batch dimension.

    Works on the engines' cache objects (dataclasses of tensors, nested) without knowing them:
    tensor fields are concatenated, other fields must be equal (the size of the photos).
    """
    first = items[0]
    if len(items) == 1:
        return first
    if isinstance(first, torch.Tensor):
        return torch.cat(list(items), dim=0)
    if dataclasses.is_dataclass(first) and not isinstance(first, type):
        values = {f.name: stack([getattr(item, f.name) for item in items]) for f in dataclasses.fields(first) if f.init}
        return type(first)(**values)
    if any(item != first for item in items[1:]):
        raise ValueError(f"cannot batch items that differ in {first!r}")
    return first


def unstack(batch: Any, count: int) -> list[Any]:
    """Split an encoded batch of ``count`` into encoded batches of one (the inverse of
    :func:`stack`): tensor fields are sliced along the batch dimension, others shared."""
    if count == 1:
        return [batch]
    if isinstance(batch, torch.Tensor):
        if batch.shape[0] != count:
            raise ValueError(f"a batch of {batch.shape[0]} cannot be split into {count}")
        return [batch[i : i + 1] for i in range(count)]
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        fields = [f.name for f in dataclasses.fields(batch) if f.init]
        parts = {name: unstack(getattr(batch, name), count) for name in fields}
        return [type(batch)(**{name: parts[name][i] for name in fields}) for i in range(count)]
    return [batch] * count
