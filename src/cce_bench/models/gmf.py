"""Generalized Matrix Factorization (He et al., "Neural Collaborative Filtering", WWW 2017,
arXiv:1708.05031), in the plain form of Tsang & Ahle's experiments:
p(click | u, i) = sigmoid(<e_user(u), e_item(i)>), trained with binary cross-entropy.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

EmbeddingFactory = Callable[[int], nn.Module]  # vocab -> module mapping (*S) ids to (*S, dim)


class GMF(nn.Module):
    def __init__(self, n_users: int, n_items: int, dim: int, embedding_factory: EmbeddingFactory):
        super().__init__()
        self.dim = dim
        self.user = embedding_factory(n_users)
        self.item = embedding_factory(n_items)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Logits (B,) for user and item ids (B,)."""
        return (self.user(users) * self.item(items)).sum(-1)

    def embeddings(self) -> list[nn.Module]:
        return [self.user, self.item]

    def table_sizes(self) -> list[tuple[int, int]]:
        """(trainable parameters, buffer bytes) of the user and the item table."""
        return [(t.num_parameters(), t.num_buffer_bytes()) for t in self.embeddings()]
