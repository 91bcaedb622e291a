"""The model's CPU kernels: the per-edge and per-atom work of a message-passing step as autograd
functions over the C++ kernels of ``cgat_dgl/kernels/src``.

On CPU that work is bound by memory traffic and by the dispatch of many small operations, not by
arithmetic: as torch operations, the (E, H) hidden layer of the edge networks (H = every group's
hidden width, 256 for the cpu preset) is written and read back about twenty times between the
forward and the backward, the edge softmax and aggregation of eq. 1b-1d pass over (E, heads, F)
tensors a dozen times, and the hypernetwork update stores an (N, F * hyper_hidden) outer product
per generated layer. The kernels do the same functions while keeping those intermediates in cache:

- ``tiled_edge_networks`` (``edge_networks.cpp``): the edge networks in tiles of whole sender
  blocks whose hidden layer stays in cache; the backward recomputes it, so no (E, H) tensor is
  stored. The node update's outputs can be written in receiver order, which the attention kernel
  then reads in sequence. Equal to ``networks.evaluate_networks``.
- ``attention_aggregate`` (``attention.cpp``): the softmax over each atom's incoming edges and
  the head-mean of the attended messages, per atom over its edges in receiver order.
  Equal to ``ops.edge_softmax`` and ``ops.aggregate`` of either backend.
- ``head_attention_fcnn`` (``edge_update.cpp``): eq. 2b-2d without the residual, the softmax over
  heads, the attended sum and the FCNN in tiles of edges. Equal to the torch operations of
  ``message_passing.paper_edge_update``.
- ``generated_product`` (``hypernetwork.cpp``): the hypernetwork update's (x (x) z) A of every
  generated layer in tiles of atoms whose outer products stay in cache. Equal to the product in
  ``hypernetwork.apply_hyper_mlp``.
- ``indexed_product`` (``indexed_product.cpp``): x_i W[index_i] with one of a few matrices per
  row, the first step's generated layers (one matrix per element).

The tiles' small matrix products run as register-blocked loops (``tile_gemm.cpp``) rather than
BLAS calls, which would copy their operands into packed panels on every call. The kernels release
the GIL. ``tests/test_cpu_kernels.py`` compares each with the torch operations, and the model with
and without them; ``tests/test_optimizer.py`` the optimiser with torch's.

The extension is built and loaded by ``cgat_dgl.kernels``, which the optimiser shares.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from cgat_dgl.kernels import applies, load
from cgat_dgl.model.layers import MLP

__all__ = ["applies", "tiled_edge_networks", "attention_aggregate", "generated_product", "head_attention_fcnn",
           "indexed_product", "ReceiverIndex"]

LEAKY_SLOPE = 0.01  # torch.nn.functional.leaky_relu's default, as the networks use


# The edge networks' inputs that take gradients, in the order of the backward's gradients (kernels.h).
DIFFERENTIABLE = ("receiver_term", "sender_term", "second_weight", "second_bias", "features", "weight", "table")


@dataclass(frozen=True)
class EdgeLayout:
    """The edge networks' inputs that take no gradient: which receiver each edge has (edges come in
    blocks of ``block`` per sender), how the outputs are parted, the edge term's table rows, and
    where the first ``ordered_groups`` groups put each edge (``positions``)."""

    receiver: torch.Tensor
    block: int
    part_groups: int
    rows: torch.Tensor | None = None
    positions: torch.Tensor | None = None
    ordered_groups: int = 0

    def args(self, tensors: tuple[torch.Tensor | None, ...]) -> Any:
        """The kernels' ``EdgeNetworkArgs`` of this layout and the ``DIFFERENTIABLE`` tensors."""
        args = load().EdgeNetworkArgs()
        for name, value in zip(DIFFERENTIABLE, tensors, strict=True):
            if value is not None:
                setattr(args, name, value)
        args.receiver, args.block, args.part_groups = self.receiver, self.block, self.part_groups
        args.rows, args.positions, args.ordered_groups = self.rows, self.positions, self.ordered_groups
        args.slope = LEAKY_SLOPE
        return args


class TiledEdgeNetworks(torch.autograd.Function):
    """out_g (E, F) = W2_g LeakyReLU(edge term + R[receiver] + S[sender]) + b2_g, edges K per sender,
    returned in parts of ``part_groups`` groups, (part_groups, E, F) each.

    The edge term is ``features`` (E, F) times ``weight`` (H, F)^T, or ``table[rows]`` with the
    table already projected (R, H). With ``positions``, edge e's row of the first
    ``ordered_groups`` groups is positions[e].
    """

    @staticmethod
    def forward(ctx: Any, layout: EdgeLayout, *tensors: torch.Tensor | None) -> tuple[torch.Tensor, ...]:  # type: ignore[override]
        ctx.layout = layout  # index tensors only: nothing here takes or carries a gradient
        ctx.save_for_backward(*tensors)
        return tuple(load().edge_networks_forward(layout.args(tensors)))

    @staticmethod
    def backward(ctx: Any, *grad_parts: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        tensors = ctx.saved_tensors
        empty = tensors[0].new_empty(0)
        grads = load().edge_networks_backward([empty if g is None else g for g in grad_parts], ctx.layout.args(tensors))
        return (None, *grads)  # undefined gradients (an absent edge-term input) arrive as None


def tiled_edge_networks(
    receiver_term: torch.Tensor, sender_term: torch.Tensor, receiver: torch.Tensor, block: int,
    second_weight: torch.Tensor, second_bias: torch.Tensor, part_groups: int, *,
    features: torch.Tensor | None = None, weight: torch.Tensor | None = None,
    table: torch.Tensor | None = None, rows: torch.Tensor | None = None,
    receiver_order: "ReceiverIndex | None" = None, ordered_parts: int = 0,
) -> tuple[torch.Tensor, ...]:  # fmt: skip
    """The edge networks' outputs in parts of ``part_groups`` groups, as ``networks.evaluate_networks``;
    with ``receiver_order``, the first ``ordered_parts`` parts hold the edges in that order."""
    layout = EdgeLayout(receiver, block, part_groups, rows=rows,
                        positions=None if receiver_order is None else receiver_order.positions,
                        ordered_groups=ordered_parts * part_groups)  # fmt: skip
    parts = TiledEdgeNetworks.apply(layout, receiver_term, sender_term, second_weight, second_bias, features, weight, table)
    return parts  # type: ignore[no-any-return]


@dataclass(frozen=True)
class ReceiverIndex:
    """Edges sorted by receiver (stable) and where each atom's run of them starts: a CSR."""

    order: torch.Tensor  # (E,) edge ids in receiver order
    offsets: torch.Tensor  # (N + 1,)
    positions: torch.Tensor  # (E,) each edge's place in receiver order: order's inverse

    @classmethod
    def of(cls, receiver: torch.Tensor, num_nodes: int) -> "ReceiverIndex":
        order = torch.argsort(receiver, stable=True)
        counts = torch.bincount(receiver, minlength=num_nodes)
        offsets = torch.zeros(num_nodes + 1, dtype=torch.long, device=receiver.device)
        torch.cumsum(counts, 0, out=offsets[1:])
        positions = torch.empty_like(order)
        positions[order] = torch.arange(order.numel(), device=order.device)
        return cls(order, offsets, positions)


class AttentionAggregate(torch.autograd.Function):
    """(N, F) = 1/heads sum_n sum_{j->i} softmax_j(s^n_ij) m^n_ij, from (heads, M, F) scores and
    messages with a row per edge (in ``order``'s order, or in receiver order without one), or per
    edge kind through ``rows``."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, scores: torch.Tensor, messages: torch.Tensor, order: torch.Tensor | None, offsets: torch.Tensor,
        rows: torch.Tensor | None,
    ) -> torch.Tensor:  # fmt: skip
        aggregate, log_norm, head_means = load().attention_aggregate_forward(scores, messages, order, offsets, rows)
        ctx.save_for_backward(scores, messages, order, offsets, rows, log_norm, head_means)
        return aggregate  # type: ignore[no-any-return]

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        d_scores, d_messages = load().attention_aggregate_backward(grad, *ctx.saved_tensors)
        return d_scores, d_messages, None, None, None


def attention_aggregate(
    scores: torch.Tensor, messages: torch.Tensor, receivers: ReceiverIndex, rows: torch.Tensor | None = None,
    *, in_receiver_order: bool = False,
) -> torch.Tensor:
    """Eq. 1b and the aggregate of eq. 1d: ``ops.aggregate((ops.edge_softmax(s) * m).mean(1))`` for
    edge-major s and m, here from group-major (heads, M, F) ones; with ``rows`` (E,), edge e reads
    row ``rows[e]``; with ``in_receiver_order``, the rows hold the edges in ``receivers``' order."""
    order = None if in_receiver_order else receivers.order
    return AttentionAggregate.apply(scores, messages, order, receivers.offsets, rows)  # type: ignore[no-any-return]


class GeneratedProduct(torch.autograd.Function):
    """(N, O) = (x_i (x) z_i) A for every row i: x (N, F), z (N, K), A (F * K, O)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, z: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, z, weight)
        return load().generated_product_forward(x, z, weight)  # type: ignore[no-any-return]

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, ...]:  # type: ignore[override]
        return tuple(load().generated_product_backward(grad, *ctx.saved_tensors))


def generated_product(x: torch.Tensor, z: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``(x.unsqueeze(2) * z.unsqueeze(1)).view(n, -1) @ weight`` without the (N, F * K) product."""
    return GeneratedProduct.apply(x, z, weight)  # type: ignore[no-any-return]


class HeadAttentionFCNN(torch.autograd.Function):
    """(E, F) = FCNN(sum_n softmax_n(s^n) m^n), the softmax over the heads n per channel, from
    (heads, E, F) scores and messages; FCNN = Linear, LeakyReLU, Linear."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, scores: torch.Tensor, messages: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor,
        w2: torch.Tensor, b2: torch.Tensor,
    ) -> torch.Tensor:  # fmt: skip
        ctx.save_for_backward(scores, messages, w1, b1, w2, b2)
        return load().head_attention_fcnn_forward(scores, messages, w1, b1, w2, b2, LEAKY_SLOPE)  # type: ignore[no-any-return]

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, ...]:  # type: ignore[override]
        return tuple(load().head_attention_fcnn_backward(grad, *ctx.saved_tensors, LEAKY_SLOPE))


def head_attention_fcnn(scores: torch.Tensor, messages: torch.Tensor, fcnn: MLP) -> torch.Tensor:
    """Eq. 2b-2d without the residual: ``fcnn((torch.softmax(scores, 0) * messages).sum(0))`` for
    group-major (heads, E, F) scores and messages and the edge update's ``MLP``."""
    first, second = fcnn.first, fcnn.second
    return HeadAttentionFCNN.apply(scores, messages, first.weight, first.bias, second.weight, second.bias)  # type: ignore[no-any-return]


class IndexedProduct(torch.autograd.Function):
    """(N, O) = x_i W[index_i] for every row i: x (N, F), W (U, F, O), index (N,)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weights: torch.Tensor, index: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, weights, index)
        return load().indexed_product_forward(x, weights, index)  # type: ignore[no-any-return]

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        grad_x, grad_weights = load().indexed_product_backward(grad, *ctx.saved_tensors)
        return grad_x, grad_weights, None


def indexed_product(x: torch.Tensor, weights: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``torch.bmm(x.unsqueeze(1), weights[index]).squeeze(1)`` without the (N, F, O) gather."""
    return IndexedProduct.apply(x, weights, index)  # type: ignore[no-any-return]
