"""A batch of crystal graphs as plain tensors, with optional prebuilt DGL graphs.

The model reads only this structure; which message-passing backend runs on it is chosen by
``cgat_dgl.ops.make_graph_ops``. Indices are global to the batch (offset per crystal).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch


@dataclass
class Batch:
    ids: list[str]
    atomic_numbers: torch.Tensor  # (N,) long
    edge_src: torch.Tensor  # (E,) long
    edge_dst: torch.Tensor  # (E,) long
    edge_rank: torch.Tensor  # (E,) long
    atom_crystal: torch.Tensor  # (N,) long, crystal index of each atom
    atoms_per_crystal: torch.Tensor  # (C,) long
    comp_elements: torch.Tensor  # (M,) long
    comp_fractions: torch.Tensor  # (M,) float
    comp_src: torch.Tensor  # (Ec,) long
    comp_dst: torch.Tensor  # (Ec,) long
    comp_crystal: torch.Tensor  # (M,) long
    elements_per_crystal: torch.Tensor  # (C,) long
    targets: torch.Tensor | None = None  # (C,) float, raw (not normalised)
    fidelity: torch.Tensor | None = None  # (C,) long, the fidelity of each target (multi-fidelity models)
    # Prebuilt DGL graphs (``dgl.batch`` of per-crystal graphs) when the DGL backend is used.
    atom_graph: Any = None
    comp_graph: Any = None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def num_crystals(self) -> int:
        return len(self.ids)

    @property
    def num_atoms(self) -> int:
        return int(self.atomic_numbers.shape[0])

    def to(self, device: torch.device | str) -> "Batch":
        moved: dict[str, Any] = {}
        for name, value in self.__dict__.items():
            if isinstance(value, torch.Tensor):
                moved[name] = value.to(device, non_blocking=True)
            elif name in ("atom_graph", "comp_graph") and value is not None:
                moved[name] = value.to(device)
        return replace(self, **moved)
