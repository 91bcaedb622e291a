"""The few message-passing primitives CGAT needs, behind one interface.

Two implementations are kept equal by tests: DGL (the default, ``dgl_ops``) and plain PyTorch
(``torch_ops``), the latter for machines where DGL cannot be installed (recent CUDA torch).
A ``GraphOps`` instance is bound to one batched graph: its edges (src -> dst) and a segment id
per node (the crystal it belongs to).
"""

from __future__ import annotations

from typing import Protocol

import torch


class GraphOps(Protocol):
    num_nodes: int
    num_segments: int
    src: torch.Tensor  # (E,) long
    dst: torch.Tensor  # (E,) long
    segment: torch.Tensor  # (N,) long

    def edge_softmax(self, scores: torch.Tensor) -> torch.Tensor:
        """Softmax of edge scores (E, ...) over the edges arriving at the same destination node."""
        ...

    def aggregate(self, messages: torch.Tensor) -> torch.Tensor:
        """Sum edge messages (E, ...) into their destination nodes -> (N, ...)."""
        ...

    def segment_softmax(self, scores: torch.Tensor) -> torch.Tensor:
        """Softmax of node scores (N, ...) over the nodes of the same segment (crystal)."""
        ...

    def segment_sum(self, values: torch.Tensor) -> torch.Tensor:
        """Sum node values (N, ...) per segment -> (num_segments, ...)."""
        ...
