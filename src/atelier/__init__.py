"""Atelier: photos and short videos into artworks with neural style transfer."""

__version__ = "0.1.0"
