"""Input features: matscholar element vectors projected to F, and shell-rank edge embeddings."""

from __future__ import annotations

import torch
from torch import nn

from cgat_dgl.data.elements import matscholar_table


class ElementTable(nn.Module):
    """The frozen matscholar table (MAX_Z + 1, 200), indexed by atomic number."""

    def __init__(self, embedding_dim: int) -> None:
        super().__init__()
        table = torch.from_numpy(matscholar_table())
        if table.shape[1] != embedding_dim:
            raise ValueError(
                f"embedding_dim={embedding_dim} but the matscholar table has {table.shape[1]} columns"
            )
        # Not saved with checkpoints: it is fixed data that ships with matminer.
        self.register_buffer("table", table, persistent=False)

    def forward(self, atomic_numbers: torch.Tensor) -> torch.Tensor:
        return self.table.index_select(0, atomic_numbers)


class AtomEmbedding(nn.Module):
    """h0 = W x_Z with a bias-free Linear(200, F) of the element's matscholar vector."""

    def __init__(self, elements: ElementTable, embedding_dim: int, features: int) -> None:
        super().__init__()
        self.elements = elements
        self.linear = nn.Linear(embedding_dim, features, bias=False)

    def forward(self, atomic_numbers: torch.Tensor) -> torch.Tensor:
        return self.linear(self.elements(atomic_numbers))


class InputEmbedding(nn.Module):
    """Atom embedding and the edge embedding Embedding(max_nbr + 1, F) of the shell rank."""

    def __init__(self, elements: ElementTable, embedding_dim: int, features: int, max_nbr: int) -> None:
        super().__init__()
        self.atoms = AtomEmbedding(elements, embedding_dim, features)
        self.ranks = nn.Embedding(max_nbr + 1, features)
