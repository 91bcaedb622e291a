"""Message-passing primitives in plain PyTorch (no DGL), for machines where DGL is unavailable.

Softmaxes subtract a per-group maximum (``scatter_reduce`` amax) before ``exp`` for stability and
use the closed-form softmax gradient.
"""

from __future__ import annotations

import torch


def _expand_index(index: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return index.view((-1,) + (1,) * (like.dim() - 1)).expand_as(like)


class _ScatterSoftmax(torch.autograd.Function):
    """Softmax over rows sharing a group id, with the closed-form backward
    dx = y * (g - sum_group(g * y)), which takes a few passes where autograd's takes many."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor, index: torch.Tensor, num_groups: int) -> torch.Tensor:  # type: ignore[override]
        shape = (num_groups,) + tuple(scores.shape[1:])
        group_max = scores.new_full(shape, float("-inf")).scatter_reduce(
            0, _expand_index(index, scores), scores, reduce="amax", include_self=True
        )
        out = torch.exp(scores - group_max.index_select(0, index))
        denominator = out.new_zeros(shape).index_add_(0, index, out)
        out /= denominator.index_select(0, index)
        ctx.save_for_backward(out, index)
        ctx.num_groups = num_groups
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # type: ignore[override]
        out, index = ctx.saved_tensors
        weighted = grad * out
        group_sum = scatter_sum(weighted, index, ctx.num_groups)
        return weighted - out * group_sum.index_select(0, index), None, None


def scatter_softmax(scores: torch.Tensor, index: torch.Tensor, num_groups: int) -> torch.Tensor:
    """Softmax of ``scores`` (K, ...) over the rows that share a group id in ``index`` (K,)."""
    return _ScatterSoftmax.apply(scores, index, num_groups)


def scatter_sum(values: torch.Tensor, index: torch.Tensor, num_groups: int) -> torch.Tensor:
    """Sum of ``values`` (K, ...) per group id in ``index`` (K,) -> (num_groups, ...)."""
    return values.new_zeros((num_groups,) + tuple(values.shape[1:])).index_add(0, index, values)


class TorchGraphOps:
    """``GraphOps`` on index tensors with ``index_add``/``scatter_reduce``."""

    def __init__(
        self,
        src: torch.Tensor,
        dst: torch.Tensor,
        num_nodes: int,
        segment: torch.Tensor,
        num_segments: int,
    ) -> None:
        self.src = src
        self.dst = dst
        self.num_nodes = int(num_nodes)
        self.segment = segment
        self.num_segments = int(num_segments)

    def edge_softmax(self, scores: torch.Tensor) -> torch.Tensor:
        return scatter_softmax(scores, self.dst, self.num_nodes)

    def aggregate(self, messages: torch.Tensor) -> torch.Tensor:
        return scatter_sum(messages, self.dst, self.num_nodes)

    def segment_softmax(self, scores: torch.Tensor) -> torch.Tensor:
        return scatter_softmax(scores, self.segment, self.num_segments)

    def segment_sum(self, values: torch.Tensor) -> torch.Tensor:
        return scatter_sum(values, self.segment, self.num_segments)
