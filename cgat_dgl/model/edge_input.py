"""Edge features and the per-edge input z_ij = [h_i || h_j || e_ij] of eq. 1a/1c and 2a/2c.

Until edges are updated per edge (eq. 2), every edge feature is a function of the edge's shell
rank alone, so it is kept as a (max_nbr + 1, F) table indexed by rank: per-edge functions of it
(the reference edge update, the edge term of the first layer) then cost max_nbr + 1 rows, not E.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class EdgeFeatures:
    rank: torch.Tensor  # (E,) long
    table: torch.Tensor | None = None  # (R, F): features as a function of the rank
    per_edge: torch.Tensor | None = None  # (E, F): features once they differ per edge

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "EdgeFeatures":
        """New features ``fn(e)`` (``fn`` acting row by row), still a table when they were one."""
        if self.per_edge is not None:
            return EdgeFeatures(self.rank, per_edge=fn(self.per_edge))
        assert self.table is not None
        return EdgeFeatures(self.rank, table=fn(self.table))

    def values(self) -> torch.Tensor:
        """Per-edge features (E, F)."""
        if self.per_edge is not None:
            return self.per_edge
        assert self.table is not None
        return self.table.index_select(0, self.rank)


class PairLinear(nn.Module):
    """Linear(3F, groups * hidden) of z_ij = [h_i || h_j || e_ij] for every edge, i the receiver.

    Returns (groups, E, hidden): the first layers of ``groups`` per-head MLPs, laid out for a
    batched product. Computed as W_i h_i + W_j h_j + W_e e_ij + b, the node terms projected once
    per node and then gathered, which saves most of the work since each atom has max_nbr edges.
    """

    def __init__(self, features: int, groups: int, hidden: int) -> None:
        super().__init__()
        self.features = features
        self.groups = groups
        self.hidden = hidden
        self.linear = nn.Linear(3 * features, groups * hidden)

    def _group_major(self, x: torch.Tensor) -> torch.Tensor:
        """(K, groups * hidden) -> (groups, K, hidden)."""
        return x.view(-1, self.groups, self.hidden).transpose(0, 1).contiguous()

    def forward(
        self, h: torch.Tensor, e: EdgeFeatures, src: torch.Tensor, dst: torch.Tensor
    ) -> torch.Tensor:
        w_receiver, w_sender, w_edge = self.linear.weight.split(self.features, dim=1)
        receiver = self._group_major(h @ w_receiver.t())
        sender = self._group_major(h @ w_sender.t())
        if e.per_edge is not None:
            edge = self._group_major(nn.functional.linear(e.per_edge, w_edge, self.linear.bias))
        else:
            assert e.table is not None
            edge = self._group_major(nn.functional.linear(e.table, w_edge, self.linear.bias))
            edge = edge.index_select(1, e.rank)
        return receiver.index_select(1, dst) + sender.index_select(1, src) + edge
