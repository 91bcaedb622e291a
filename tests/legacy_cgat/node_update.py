"""The node update of eq. 1a-1d: vector attention over incoming edges, then a hypernetwork update."""

from __future__ import annotations

import torch
from torch import nn

from cgat_dgl.model.config import ModelConfig
from legacy_cgat.edge_input import EdgeFeatures, EdgeKinds, EdgeSet, PairLinear
from legacy_cgat.embedding import InitialFeatures
from legacy_cgat.hypernetwork import HyperMLP
from cgat_dgl.model.layers import GroupedLinear
from cgat_dgl.ops.base import GraphOps


class NodeUpdate(nn.Module):
    """h_i <- h_i + HFCNN(1/N_heads sum_n sum_j a_ij^n m_ij^n), with i the receiving atom.

    Per head n, FCNN_a (scores) and FCNN_m (messages) map z_ij = [h_i || h_j || e_ij] through
    ``fcnn_hidden`` to F channels; the attention is a vector (one weight per channel).
    The hypernetwork input is h0 at the first step and d*h0 + (1-d)*aggregate afterwards.
    """

    def __init__(self, config: ModelConfig, first: bool) -> None:
        super().__init__()
        f, heads, hidden = config.atom_fea_len, config.msg_heads, config.fcnn_hidden
        self.heads = heads
        # First layers of FCNN_a and FCNN_m of every head in one product, second layers grouped:
        # groups [0, heads) are the score networks, [heads, 2*heads) the message networks.
        self.first_layer = PairLinear(f, 2 * heads, hidden)
        self.second_layer = GroupedLinear(2 * heads, hidden, f)
        self.update = HyperMLP(f, config.hyper_hidden, config.hyper_layers)
        self.damping = None if first else nn.Parameter(torch.tensor([0.5]))

    def edge_networks(self, edges: EdgeSet) -> torch.Tensor:
        """FCNN_a and FCNN_m of every head for every member -> (M, 2*heads, F) (eq. 1a, 1c)."""
        hidden = nn.functional.leaky_relu(self.first_layer(edges))
        # Edge-major from here: the graph operations index the first axis.
        return self.second_layer(hidden).transpose(0, 1).contiguous()

    def forward(
        self, h: torch.Tensor, h0: InitialFeatures, e: EdgeFeatures, ops: GraphOps,
        kinds: EdgeKinds | None = None,
    ) -> torch.Tensor:  # fmt: skip
        """h^{t+1}. At the first step h is h0 and ``kinds`` may be given: the edge networks then
        run once per edge kind."""
        if kinds is None:
            out = self.edge_networks(EdgeSet.edges(h, e, ops.src, ops.dst))
        else:
            out = self.edge_networks(kinds.members).index_select(0, kinds.of_edge)
        scores, messages = out.view(out.shape[0], 2, self.heads, -1).unbind(1)  # eq. 1a, 1c
        attention = ops.edge_softmax(scores)  # eq. 1b: over the edges arriving at i
        # eq. 1d: the mean over heads commutes with the sum over j, so it is taken per edge first.
        aggregate = ops.aggregate((attention * messages).mean(dim=1))
        if self.damping is None:
            # h0 depends on the element only: generate G's weights once per element.
            return h + self.update(aggregate, h0.per_element, index=h0.element_index)
        d = self.damping.clamp(0.0, 1.0)
        return h + self.update(aggregate, d * h0.values + (1.0 - d) * aggregate)
