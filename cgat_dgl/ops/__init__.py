"""Message-passing primitives behind one interface, with a DGL and a plain PyTorch backend."""

from __future__ import annotations

from typing import Any, Literal

import torch

from cgat_dgl.ops.base import GraphOps
from cgat_dgl.ops.torch_ops import TorchGraphOps

Backend = Literal["dgl", "torch"]


def make_graph_ops(
    backend: Backend,
    src: torch.Tensor,
    dst: torch.Tensor,
    num_nodes: int,
    segment: torch.Tensor,
    num_segments: int,
    graph: Any = None,
) -> GraphOps:
    """Bind the primitives of ``backend`` to one batched graph.

    ``graph`` is an optional prebuilt DGLGraph with the same edges in the same order (DGL only;
    ignored by the PyTorch backend). DGL is imported only when the DGL backend is asked for.
    """
    if backend == "torch":
        return TorchGraphOps(src, dst, num_nodes, segment, num_segments)
    if backend == "dgl":
        from cgat_dgl.ops.dgl_ops import DGLGraphOps

        return DGLGraphOps(src, dst, num_nodes, segment, num_segments, graph=graph)
    raise ValueError(f"unknown message-passing backend {backend!r}; expected 'dgl' or 'torch'")


__all__ = ["Backend", "GraphOps", "TorchGraphOps", "make_graph_ops"]
