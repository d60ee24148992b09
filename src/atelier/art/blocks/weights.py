"""Reading weight files: ``torch.load`` made safe (tensors only, onto the CPU), typed refusals."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from atelier.art.errors import ModelError, ModelMissingError

#: What to tell a user whose weights are missing, when the caller knows nothing more precise.
INSTALL_HINT = "run `atelier models download` (or `atelier models import DIR`) to install them"


def read_state_dict(path: str | Path, *, what: str, hint: str = INSTALL_HINT) -> dict[str, torch.Tensor]:
    """The state dict in ``path``; ``what`` names the weights in messages ("MicroAST decoder").

    ``weights_only=True`` refuses pickled code, so a hostile file cannot run anything. A missing
    file raises :class:`ModelMissingError` (with ``hint``), a damaged or foreign one
    :class:`ModelError`.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelMissingError(f"{what} weights not found at {path}; {hint}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged or foreign file: pickle, zip and torch errors alike
        raise ModelError(
            f"{what} weights at {path} could not be read ({exc.__class__.__name__}: {exc})"
        ) from exc
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{what} weights at {path} are not a state dict of tensors")
    return dict(state)
