"""Edge features kept as a table while they depend on the shell rank alone, and the edge kinds of
the first step."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class InitialFeatures:
    """h0 of every atom, also kept as one row per distinct element of the batch: functions of h0
    can be computed per element and gathered."""

    per_element: torch.Tensor  # (U, F)
    element_index: torch.Tensor  # (N,) row of each atom in per_element
    values: torch.Tensor  # (N, F)

    @classmethod
    def embed(cls, linear: Callable[[torch.Tensor], torch.Tensor], atomic_numbers: torch.Tensor) -> "InitialFeatures":
        """``linear`` maps atomic numbers to h0; it runs once per distinct element."""
        distinct, index = torch.unique(atomic_numbers, return_inverse=True)
        per_element = linear(distinct)
        return cls(per_element, index, per_element.index_select(0, index))


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
    """Inputs of the edge networks: z = [h[receiver] || h[sender] || e] for every member.

    ``sender_block`` = K says that the members come in blocks of K per sender, in sender order
    (sender = arange(rows).repeat_interleave(K)), so sender terms can be broadcast.
    """

    h: torch.Tensor  # (rows, F) node features
    receiver: torch.Tensor  # (M,) row of h
    sender: torch.Tensor  # (M,) row of h
    e: EdgeFeatures  # (M,) members' edge features
    sender_block: int | None = None


def sender_block(src: torch.Tensor, num_nodes: int) -> int | None:
    """K when the edges are K per atom, sorted by sender (as the graph builder makes them)."""
    edges = src.shape[0]
    if num_nodes == 0 or edges % num_nodes:
        return None
    k = edges // num_nodes
    expected = torch.arange(num_nodes, device=src.device).repeat_interleave(k)
    return k if torch.equal(src, expected) else None


@dataclass(frozen=True)
class EdgeKinds:
    """The distinct (element_i, element_j, edge-feature row) of a batch, valid while h = h0."""

    members: EdgeSet  # one member per kind, on the per-element h0
    of_edge: torch.Tensor  # (E,) kind of each edge

    @classmethod
    def find(cls, h0: InitialFeatures, e: EdgeFeatures, src: torch.Tensor, dst: torch.Tensor) -> "EdgeKinds":
        """``e`` must still be a table."""
        assert e.table is not None, "edge kinds exist only while edge features are a table"
        element = h0.element_index
        elements, rows = h0.per_element.shape[0], e.table.shape[0]
        key = (element.index_select(0, dst) * elements + element.index_select(0, src)) * rows + e.row
        kinds, of_edge = torch.unique(key, return_inverse=True)
        members = EdgeSet(
            h0.per_element,
            receiver=kinds // (rows * elements),
            sender=(kinds // rows) % elements,
            e=EdgeFeatures(kinds % rows, table=e.table),
        )
        return cls(members, of_edge)
