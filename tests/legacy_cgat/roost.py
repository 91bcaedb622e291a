"""The Roost composition branch: message passing on the element graph, then a context vector c."""

from __future__ import annotations

import torch
from torch import nn

from legacy_cgat.config import ModelConfig
from legacy_cgat.embedding import ElementTable
from legacy_cgat.layers import MLP
from cgat_dgl.ops.base import GraphOps

# Fractions are positive; the floor only guards log() against a malformed zero.
_MIN_FRACTION = 1e-12


class RoostMessageStep(nn.Module):
    """x_i <- x_i + sum_j a_ij m_ij with a_ij = w_j^p exp(s_ij) / sum_k w_k^p exp(s_ik).

    s and m are MLPs of [x_i || x_j], i the receiving element and w_j the sender's atomic
    fraction; the weighted softmax is the edge softmax of s_ij + p log w_j.
    """

    def __init__(self, features: int, hidden: int) -> None:
        super().__init__()
        self.gate = MLP(2 * features, hidden, 1)
        self.message = MLP(2 * features, hidden, features)
        self.power = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor, log_fraction: torch.Tensor, ops: GraphOps) -> torch.Tensor:
        z = torch.cat([x.index_select(0, ops.dst), x.index_select(0, ops.src)], dim=1)
        scores = self.gate(z) + self.power * log_fraction.index_select(0, ops.src).unsqueeze(1)
        attention = ops.edge_softmax(scores)
        return x + ops.aggregate(attention * self.message(z))


class Roost(nn.Module):
    """Element nodes [Linear(200, F-1)(x_Z) || fraction], ``roost_steps`` message steps, then a
    fraction-weighted attention pooling per crystal -> context c (C, F)."""

    def __init__(self, config: ModelConfig, elements: ElementTable) -> None:
        super().__init__()
        f = config.atom_fea_len
        self.elements = elements
        self.embedding = nn.Linear(config.embedding_dim, f - 1)
        self.steps = nn.ModuleList(
            RoostMessageStep(f, config.roost_hidden) for _ in range(config.roost_steps)
        )
        self.pool_gate = MLP(f, config.roost_hidden, 1)
        self.pool_power = nn.Parameter(torch.ones(1))

    def forward(self, elements: torch.Tensor, fractions: torch.Tensor, ops: GraphOps) -> torch.Tensor:
        embedded = self.embedding(self.elements.table).index_select(0, elements)
        fractions = fractions.to(embedded.dtype)
        x = torch.cat([embedded, fractions.unsqueeze(1)], dim=1)
        log_fraction = fractions.clamp_min(_MIN_FRACTION).log()
        for step in self.steps:
            x = step(x, log_fraction, ops)
        scores = self.pool_gate(x) + self.pool_power * log_fraction.unsqueeze(1)
        return ops.segment_sum(ops.segment_softmax(scores) * x)
