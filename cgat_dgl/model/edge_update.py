"""Edge updates: eq. 2a-2d of the paper (attention over heads), or the reference code's e + MLP(e)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cgat_dgl.model.config import ModelConfig
from cgat_dgl.model.edge_networks import EdgeNetworks, edge_inputs
from cgat_dgl.model.layers import MLP


class PaperEdgeUpdate(nn.Module):
    """e_ij <- e_ij + FCNN(sum_n a_ij^n m_ij^n), a^n softmaxed over the heads n (eq. 2b).

    Scores and messages come from per-head FCNNs of z_ij = [h_i || h_j || e_ij] (eq. 2a, 2c),
    with the node embeddings of the same step as the node update.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        f = config.atom_fea_len
        self.networks = EdgeNetworks(f, config.msg_heads, config.fcnn_hidden)
        self.fcnn = MLP(f, f, f)

    def forward(self, graph: Any, h: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """e^{t+1} (E, F) from h^t (N, F) and e^t (E, F) on a DGL graph."""
        with graph.local_scope():
            graph.ndata["h"] = h
            graph.edata["e"] = e
            graph.apply_edges(edge_inputs)
            scores, messages = self.networks(graph.edata["z"])  # eq. 2a, 2c
        attention = torch.softmax(scores, dim=1)  # eq. 2b: over the heads, per channel
        return e + self.fcnn((attention * messages).sum(dim=1))  # eq. 2d


class ReferenceEdgeUpdate(nn.Module):
    """e <- e + MLP(e): what the reference code applies (its head attention is discarded)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        f = config.atom_fea_len
        self.mlp = MLP(f, f, f)

    def forward(self, graph: Any, h: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        return e + self.mlp(e)


def make_edge_update(config: ModelConfig) -> nn.Module | None:
    if config.edge_update == "paper":
        return PaperEdgeUpdate(config)
    if config.edge_update == "reference":
        return ReferenceEdgeUpdate(config)
    if config.edge_update == "none":
        return None
    raise ValueError(f"unknown edge_update {config.edge_update!r}; known: paper, reference, none")
