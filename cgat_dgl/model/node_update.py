"""The node update of eq. 1a-1d: vector attention over incoming edges, then a hypernetwork update."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cgat_dgl.model.config import ModelConfig
from cgat_dgl.model.edge_networks import EdgeNetworks, edge_inputs
from cgat_dgl.model.hypernetwork import HyperMLP


class NodeUpdate(nn.Module):
    """h_i <- h_i + HFCNN(1/N_heads sum_n sum_j a_ij^n m_ij^n), with i the receiving atom.

    Per head n, FCNN_a (scores) and FCNN_m (messages) map z_ij = [h_i || h_j || e_ij] through
    ``fcnn_hidden`` to F channels; the attention is a vector (one weight per channel), softmaxed
    over the edges arriving at i. The hypernetwork input is h0 at the first step and
    d * h0 + (1 - d) * aggregate afterwards.
    """

    def __init__(self, config: ModelConfig, first: bool) -> None:
        super().__init__()
        f = config.atom_fea_len
        self.networks = EdgeNetworks(f, config.msg_heads, config.fcnn_hidden)
        self.update = HyperMLP(f, config.hyper_hidden, config.hyper_layers)
        self.damping = None if first else nn.Parameter(torch.tensor([0.5]))

    def hyper_input(self, h0: torch.Tensor, aggregate: torch.Tensor) -> torch.Tensor:
        if self.damping is None:
            return h0
        d = self.damping.clamp(0.0, 1.0)
        return d * h0 + (1.0 - d) * aggregate

    def forward(self, graph: Any, h: torch.Tensor, h0: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """h^{t+1} from h^t and h0 (N, F) and e^t (E, F) on a DGL graph."""
        import dgl.function as fn  # imported here: the fast implementation runs without DGL
        from dgl.nn.functional import edge_softmax

        with graph.local_scope():
            graph.ndata["h"] = h
            graph.edata["e"] = e
            graph.apply_edges(edge_inputs)
            scores, messages = self.networks(graph.edata["z"])  # eq. 1a, 1c
            graph.edata["am"] = edge_softmax(graph, scores) * messages  # eq. 1b
            graph.update_all(fn.copy_e("am", "m"), fn.sum("m", "aggregate"))
            aggregate = graph.ndata["aggregate"].mean(dim=1)  # eq. 1d: mean over the heads
        return h + self.update(aggregate, self.hyper_input(h0, aggregate))
