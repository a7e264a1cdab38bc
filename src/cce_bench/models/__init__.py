"""Recommendation models that take any embedding method through a factory, and how a run's
configuration becomes one."""

from .build import build_model, model_size
from .dlrm import DLRM
from .gmf import GMF, EmbeddingFactory

__all__ = ["DLRM", "GMF", "EmbeddingFactory", "build_model", "model_size"]
