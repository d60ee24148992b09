"""What every arbitrary-style engine offers, so callers can cache the expensive halves.

An engine splits a stylization into three steps:

* ``encode_content(content)`` -- the photo's features. Cache them by the photo's hash:
  re-picking a style must not re-encode the photo.
* ``encode_style(style)`` -- the painting's statistics. Cache them by the style's hash or name.
* ``decode(content_features, style_features, ...)`` -- the picture.

Tensors are float RGB in 0..1, shaped (N, 3, H, W); a batch of N contents shares one size.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

from atelier.art.progress import ProgressCallback


@runtime_checkable
class StyleEngine(Protocol):
    """An arbitrary-style engine (AdaIN, MicroAST)."""

    name: str

    def encode_content(self, content: torch.Tensor) -> Any:
        """Features of a batch of content images (N, 3, H, W) in 0..1."""
        ...

    def encode_style(self, style: torch.Tensor) -> Any:
        """Statistics of one style image (1, 3, h, w) in 0..1."""
        ...

    def decode(
        self,
        content: Any,
        styles: list[Any],
        *,
        style_weights: list[float] | None = None,
        alpha: float = 1.0,
        mask: torch.Tensor | None = None,
        progress: ProgressCallback | None = None,
    ) -> torch.Tensor:
        """The stylized batch (N, 3, H, W) in 0..1 at the content's size."""
        ...
