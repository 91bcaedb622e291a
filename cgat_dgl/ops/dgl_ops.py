"""Message-passing primitives on a DGLGraph: DGL's edge softmax, ``copy_e_sum`` and segment ops.

Importing this module imports DGL; ``cgat_dgl.ops.make_graph_ops`` imports it only for the DGL
backend, so the PyTorch backend runs where DGL is not installed.
"""

from __future__ import annotations

from typing import Any

import dgl
import torch


class _EdgeSoftmax(torch.autograd.Function):
    """Softmax over the edges arriving at each node from DGL's builtin reductions, with the
    closed-form backward dx = y * (g - sum_dst(g * y)). On CPU this takes about half the time of
    ``dgl.ops.edge_softmax``; the per-node maximum comes from torch's ``scatter_reduce``, several
    times faster than DGL's ``copy_e_max``, which also tracks the argmax."""

    @staticmethod
    def forward(ctx, graph: Any, scores: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        index = dst.view((-1,) + (1,) * (scores.dim() - 1)).expand_as(scores)
        node_max = scores.new_full((graph.num_nodes(),) + tuple(scores.shape[1:]), float("-inf"))
        node_max = node_max.scatter_reduce(0, index, scores, reduce="amax", include_self=True)
        out = torch.exp(dgl.ops.e_sub_v(graph, scores, node_max))
        out = dgl.ops.e_div_v(graph, out, dgl.ops.copy_e_sum(graph, out))
        ctx.graph = graph
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[None, torch.Tensor, None]:  # type: ignore[override]
        (out,) = ctx.saved_tensors
        weighted = grad * out
        return None, weighted - dgl.ops.e_mul_v(ctx.graph, out, dgl.ops.copy_e_sum(ctx.graph, weighted)), None


class DGLGraphOps:
    """``GraphOps`` bound to one (batched) DGLGraph whose edge order matches ``src``/``dst``.

    Segment operations use DGL's segment kernels, which need the nodes of a segment to be
    contiguous and segments in increasing order, as in a batch built by concatenation.
    """

    def __init__(
        self,
        src: torch.Tensor,
        dst: torch.Tensor,
        num_nodes: int,
        segment: torch.Tensor,
        num_segments: int,
        graph: Any = None,
    ) -> None:
        self.src = src
        self.dst = dst
        self.num_nodes = int(num_nodes)
        self.segment = segment
        self.num_segments = int(num_segments)
        if graph is None:
            graph = dgl.graph((src, dst), num_nodes=self.num_nodes)
        elif graph.num_nodes() != self.num_nodes or graph.num_edges() != src.shape[0]:
            raise ValueError(
                f"prebuilt DGL graph has {graph.num_nodes()} nodes and {graph.num_edges()} edges, "
                f"the batch has {self.num_nodes} nodes and {src.shape[0]} edges"
            )
        self.graph = graph
        if segment.numel() > 1 and bool((segment[1:] < segment[:-1]).any()):
            raise ValueError("segment ids must be non-decreasing for DGL segment operations")
        self.segment_lengths = torch.bincount(segment, minlength=self.num_segments)

    # DGL kernels read raw memory, so inputs (often slices of a larger tensor) are made contiguous.
    def edge_softmax(self, scores: torch.Tensor) -> torch.Tensor:
        return _EdgeSoftmax.apply(self.graph, scores.contiguous(), self.dst)

    def aggregate(self, messages: torch.Tensor) -> torch.Tensor:
        return dgl.ops.copy_e_sum(self.graph, messages.contiguous())

    def segment_softmax(self, scores: torch.Tensor) -> torch.Tensor:
        return dgl.ops.segment_softmax(self.segment_lengths, scores.contiguous())

    def segment_sum(self, values: torch.Tensor) -> torch.Tensor:
        return dgl.ops.segment_reduce(self.segment_lengths, values.contiguous(), reducer="sum")
