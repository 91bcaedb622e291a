"""Input features: matscholar element vectors projected to F, and shell-rank edge embeddings."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from cgat_dgl.model.embedding import ElementTable


@dataclass(frozen=True)
class InitialFeatures:
    """h0 of every atom. It depends on the element alone, so it is also kept as one row per
    distinct element of the batch: functions of h0 can be computed per element and gathered."""

    per_element: torch.Tensor  # (U, F)
    element_index: torch.Tensor  # (N,) row of each atom in per_element
    values: torch.Tensor  # (N, F)


class AtomEmbedding(nn.Module):
    """h0 = W x_Z with a bias-free Linear(200, F) of the element's matscholar vector."""

    def __init__(self, elements: ElementTable, embedding_dim: int, features: int) -> None:
        super().__init__()
        self.elements = elements
        self.linear = nn.Linear(embedding_dim, features, bias=False)

    def forward(self, atomic_numbers: torch.Tensor) -> InitialFeatures:
        distinct, index = torch.unique(atomic_numbers, return_inverse=True)
        per_element = self.linear(self.elements(distinct))
        return InitialFeatures(per_element, index, per_element.index_select(0, index))


class InputEmbedding(nn.Module):
    """Atom embedding and the edge embedding Embedding(max_nbr + 1, F) of the shell rank."""

    def __init__(self, elements: ElementTable, embedding_dim: int, features: int, max_nbr: int) -> None:
        super().__init__()
        self.atoms = AtomEmbedding(elements, embedding_dim, features)
        self.ranks = nn.Embedding(max_nbr + 1, features)
