"""Crystal pooling: multi-head vector attention over a crystal's atoms, guided by the context c."""

from __future__ import annotations

import torch
from torch import nn

from legacy_cgat.config import ModelConfig
from legacy_cgat.layers import MultiHeadMLP
from cgat_dgl.ops.base import GraphOps


class CrystalPooling(nn.Module):
    """g = concat_n sum_i a_i^n m_i^n with m^n = MLP_n(h_i), a^n = softmax_i MLP_n([h_i || c]).

    The softmax runs over the atoms of each crystal, per head and channel -> (C, heads * F).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        f, heads = config.atom_fea_len, config.msg_heads
        self.message = MultiHeadMLP(f, f, f, heads)
        self.attention = MultiHeadMLP(2 * f, f, f, heads)

    def forward(self, h: torch.Tensor, context: torch.Tensor, ops: GraphOps) -> torch.Tensor:
        scores = self.attention(torch.cat([h, context.index_select(0, ops.segment)], dim=1))
        pooled = ops.segment_sum(ops.segment_softmax(scores) * self.message(h))
        return pooled.flatten(1)
