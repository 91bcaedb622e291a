"""The per-crystal graph: what the cache stores and the loader batches.

Edges follow the reference CGAT convention: every atom lists its ``max_nbr`` nearest neighbours,
and messages flow from the listing atom (``edge_src``) to the listed neighbour (``edge_dst``), so
each atom receives from the atoms that count it among their nearest (in-degree varies, out-degree
is ``max_nbr``). ``edge_rank`` is the shell rank of ``edge_dst`` in ``edge_src``'s list (1..max_nbr),
the paper's "graph distance".

The composition graph feeds the Roost branch: one node per distinct element with its atomic
fraction, fully connected without self-loops (a single-element crystal has no composition edges).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CrystalGraph:
    id: str
    atomic_numbers: np.ndarray  # (N,) int16
    edge_src: np.ndarray  # (E,) int32, the listing atom (sender)
    edge_dst: np.ndarray  # (E,) int32, the listed neighbour (receiver)
    edge_rank: np.ndarray  # (E,) int8, shell rank 1..max_nbr
    comp_elements: np.ndarray  # (M,) int16, distinct atomic numbers
    comp_fractions: np.ndarray  # (M,) float32, atomic fractions summing to 1
    comp_src: np.ndarray  # (Ec,) int32
    comp_dst: np.ndarray  # (Ec,) int32

    @property
    def num_atoms(self) -> int:
        return int(self.atomic_numbers.shape[0])

    @property
    def num_edges(self) -> int:
        return int(self.edge_src.shape[0])
