"""Typed refusals of the art layer.

Every error here carries a message written for the person who gave the input, so the CLI can
print it on one line (exit code 2) and the web layer can send it back as JSON.
"""

from __future__ import annotations


class ArtError(Exception):
    """Base class: a refusal whose message is fit to show to the user."""


class ImageError(ArtError):
    """An image could not be accepted (corrupt, unsupported, too large, ...)."""


class ModelError(ArtError):
    """Model weights are missing, damaged or of the wrong layout."""


class ModelMissingError(ModelError):
    """Weights an engine needs are not installed; the message names the command that fixes it."""


class DeviceError(ArtError):
    """The requested compute device is not available."""
