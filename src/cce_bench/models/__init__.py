"""Recommendation models that take any embedding method through a factory."""

from .gmf import GMF, EmbeddingFactory

__all__ = ["GMF", "EmbeddingFactory"]
