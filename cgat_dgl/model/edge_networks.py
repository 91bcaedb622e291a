"""The per-head FCNNs of z_ij = [h_i || h_j || e_ij] shared in form by eq. 1a/1c and eq. 2a/2c."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from cgat_dgl.model.layers import GroupedLinear


def edge_inputs(edges: Any) -> dict[str, torch.Tensor]:
    """DGL edge function: z_ij = [h_i || h_j || e_ij], with i the receiving atom (the edge's dst)."""
    return {"z": torch.cat([edges.dst["h"], edges.src["h"], edges.data["e"]], dim=1)}


class EdgeNetworks(nn.Module):
    """FCNN_a (scores) and FCNN_m (messages) of every head: 3F -> hidden -> F with LeakyReLU.

    The first layers of all 2 * heads networks are one Linear(3F, 2 * heads * hidden), the second
    layers one grouped product; groups [0, heads) are the score networks, [heads, 2 * heads) the
    message networks.
    """

    def __init__(self, features: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.features = features
        self.heads = heads
        self.hidden = hidden
        self.first_layer = nn.Linear(3 * features, 2 * heads * hidden)
        self.second_layer = GroupedLinear(2 * heads, hidden, features)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores and messages (E, heads, F) each, from z (E, 3F); contiguous, as DGL's kernels need."""
        hidden = F.leaky_relu(self.first_layer(z)).view(-1, 2 * self.heads, self.hidden)
        out = self.second_layer(hidden.transpose(0, 1))  # (2 * heads, E, F)
        scores, messages = out.transpose(0, 1).split(self.heads, dim=1)
        return scores.contiguous(), messages.contiguous()
