"""Edge updates: eq. 2a-2d of the paper (attention over heads), or the reference code's e + MLP(e)."""

from __future__ import annotations

import torch
from torch import nn

from cgat_dgl.model.config import ModelConfig
from legacy_cgat.edge_input import EdgeFeatures, EdgeKinds, EdgeSet, PairLinear
from cgat_dgl.model.layers import MLP, GroupedLinear
from cgat_dgl.ops.base import GraphOps


class PaperEdgeUpdate(nn.Module):
    """e_ij <- e_ij + FCNN(sum_n a_ij^n m_ij^n), a^n softmaxed over the heads n (eq. 2b).

    Scores and messages come from per-head FCNNs of z_ij = [h_i || h_j || e_ij] (eq. 2a, 2c),
    with the node embeddings of the same step as the node update.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        f, heads, hidden = config.atom_fea_len, config.msg_heads, config.fcnn_hidden
        self.heads = heads
        self.first_layer = PairLinear(f, 2 * heads, hidden)
        self.second_layer = GroupedLinear(2 * heads, hidden, f)
        self.fcnn = MLP(f, f, f)

    def forward(
        self, h: torch.Tensor, e: EdgeFeatures, ops: GraphOps, kinds: EdgeKinds | None = None
    ) -> EdgeFeatures:
        """e^{t+1}. With ``kinds`` (first step) the result is a table with one row per edge kind."""
        edges = EdgeSet.edges(h, e, ops.src, ops.dst) if kinds is None else kinds.members
        hidden = nn.functional.leaky_relu(self.first_layer(edges))
        out = self.second_layer(hidden)  # (2*heads, M, F)
        scores, messages = out.view(2, self.heads, -1, out.shape[-1]).unbind(0)  # eq. 2a, 2c
        attention = torch.softmax(scores, dim=0)  # eq. 2b: over the heads, per channel
        updated = edges.e.values() + self.fcnn((attention * messages).sum(dim=0))  # eq. 2d
        if kinds is None:
            return EdgeFeatures(e.row, per_edge=updated)
        return EdgeFeatures(kinds.of_edge, table=updated)


class ReferenceEdgeUpdate(nn.Module):
    """e <- e + MLP(e): what the reference code applies (its head attention is discarded)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        f = config.atom_fea_len
        self.mlp = MLP(f, f, f)

    def forward(
        self, h: torch.Tensor, e: EdgeFeatures, ops: GraphOps, kinds: EdgeKinds | None = None
    ) -> EdgeFeatures:
        return e.map(lambda x: x + self.mlp(x))


def make_edge_update(config: ModelConfig) -> nn.Module | None:
    if config.edge_update == "paper":
        return PaperEdgeUpdate(config)
    if config.edge_update == "reference":
        return ReferenceEdgeUpdate(config)
    return None
