"""Edge features and the per-edge input z_ij = [h_i || h_j || e_ij] of eq. 1a/1c and 2a/2c.

Edge features start as a function of the shell rank: a (max_nbr + 1, F) table and a table row per
edge. Per-edge functions of them (the reference edge update, the edge term of the first layers)
then cost a row per table entry, not per edge. At the first step h = h0 depends on the element
alone, so everything computed from z_ij depends only on the edge's kind (element_i, element_j,
rank); the first step evaluates its networks once per kind (about a tenth of the edges of a batch).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class EdgeFeatures:
    """e_ij: rows of ``table`` (``row`` gives each edge's row), or ``per_edge`` values."""

    row: torch.Tensor  # (E,) long: the shell rank at first
    table: torch.Tensor | None = None  # (R, F)
    per_edge: torch.Tensor | None = None  # (E, F), once the features differ per edge

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "EdgeFeatures":
        """New features ``fn(e)`` (``fn`` acting row by row), still a table when they were one."""
        if self.per_edge is not None:
            return EdgeFeatures(self.row, per_edge=fn(self.per_edge))
        assert self.table is not None
        return EdgeFeatures(self.row, table=fn(self.table))

    def values(self) -> torch.Tensor:
        """Per-edge features (E, F)."""
        if self.per_edge is not None:
            return self.per_edge
        assert self.table is not None
        return self.table.index_select(0, self.row)


@dataclass(frozen=True)
class EdgeSet:
    """Inputs of the edge networks: z = [h[receiver] || h[sender] || e] for every member."""

    h: torch.Tensor  # (rows, F) node features
    receiver: torch.Tensor  # (M,) row of h
    sender: torch.Tensor  # (M,) row of h
    e: EdgeFeatures  # (M,) members' edge features

    @classmethod
    def edges(cls, h: torch.Tensor, e: EdgeFeatures, src: torch.Tensor, dst: torch.Tensor) -> "EdgeSet":
        return cls(h, receiver=dst, sender=src, e=e)


@dataclass(frozen=True)
class EdgeKinds:
    """The distinct (element_i, element_j, edge-feature row) of a batch, valid while h = h0."""

    members: EdgeSet  # one member per kind, on the per-element h0
    of_edge: torch.Tensor  # (E,) kind of each edge

    @classmethod
    def find(
        cls, h0_per_element: torch.Tensor, element: torch.Tensor, e: EdgeFeatures,
        src: torch.Tensor, dst: torch.Tensor,
    ) -> "EdgeKinds":  # fmt: skip
        """``element``: each atom's row in ``h0_per_element``; ``e`` must still be a table."""
        assert e.table is not None, "edge kinds exist only while edge features are a table"
        elements, rows = h0_per_element.shape[0], e.table.shape[0]
        key = (element.index_select(0, dst) * elements + element.index_select(0, src)) * rows + e.row
        kinds, of_edge = torch.unique(key, return_inverse=True)
        members = EdgeSet(
            h0_per_element,
            receiver=kinds // (rows * elements),
            sender=(kinds // rows) % elements,
            e=EdgeFeatures(kinds % rows, table=e.table),
        )
        return cls(members, of_edge)


class PairLinear(nn.Module):
    """Linear(3F, groups * hidden) of z = [h_i || h_j || e_ij] for every member of an edge set,
    i the receiver.

    Returns (groups, M, hidden): the first layers of ``groups`` per-head MLPs, laid out for a
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

    def forward(self, edges: EdgeSet) -> torch.Tensor:
        w_receiver, w_sender, w_edge = self.linear.weight.split(self.features, dim=1)
        receiver = self._group_major(edges.h @ w_receiver.t())
        sender = self._group_major(edges.h @ w_sender.t())
        e = edges.e
        if e.per_edge is not None:
            edge = self._group_major(nn.functional.linear(e.per_edge, w_edge, self.linear.bias))
        else:
            assert e.table is not None
            edge = self._group_major(nn.functional.linear(e.table, w_edge, self.linear.bias))
            edge = edge.index_select(1, e.row)
        return receiver.index_select(1, edges.receiver) + sender.index_select(1, edges.sender) + edge
