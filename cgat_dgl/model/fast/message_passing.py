"""The message-passing steps of CGAT, eq. 1 and 2, in the fast formulation."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cgat_dgl.model.edge_update import PaperEdgeUpdate, ReferenceEdgeUpdate
from cgat_dgl.model.fast import cpu_kernels
from cgat_dgl.model.fast.edge_features import EdgeFeatures, EdgeKinds, EdgeSet, InitialFeatures, sender_block
from cgat_dgl.model.fast.hypernetwork import apply_hyper_mlp
from cgat_dgl.model.fast.networks import evaluate_networks
from cgat_dgl.model.node_update import NodeUpdate
from cgat_dgl.ops.base import GraphOps


def fast_message_passing(
    steps: Sequence[nn.Module], h0: InitialFeatures, e: EdgeFeatures, ops: GraphOps
) -> torch.Tensor:
    """h after every step of ``steps`` (``MessagePassingStep``s), starting from h = h0 and the
    rank-embedding table ``e``."""
    block = sender_block(ops.src, ops.num_nodes)
    h = h0.values
    receivers = cpu_kernels.ReceiverIndex.of(ops.dst, ops.num_nodes) if cpu_kernels.applies(h, "attention") else None
    for t, step in enumerate(steps):
        if t == 0:  # h = h0: networks of z_ij need one evaluation per edge kind
            kinds: EdgeKinds | None = EdgeKinds.find(h0, e, ops.src, ops.dst)
            edges = kinds.members
        else:
            kinds = None
            edges = EdgeSet(h, receiver=ops.dst, sender=ops.src, e=e, sender_block=block)
        node, edge = step.node, step.edge
        networks = [node.networks] + ([edge.networks] if isinstance(edge, PaperEdgeUpdate) else [])
        # Score and message groups of each network, (heads, M, F) each, the node update's first;
        # with the attention kernel, those of the node update per edge in receiver order.
        in_receiver_order = receivers is not None and kinds is None
        parts = evaluate_networks(networks, edges, receivers if in_receiver_order else None)
        h_next = node_update(node, h, h0, parts[0], parts[1], kinds, ops, receivers, in_receiver_order)
        if isinstance(edge, PaperEdgeUpdate):
            e = paper_edge_update(edge, parts[2], parts[3], edges, kinds)
        elif isinstance(edge, ReferenceEdgeUpdate):
            e = e.map(lambda x, mlp=edge.mlp: x + mlp(x))
        elif edge is not None:  # a new edge update needs its fast form here, or it would be skipped silently
            raise TypeError(f"the fast message passing has no form of the edge update {type(edge).__name__}")
        h = h_next
    return h


def _edge_major(values: torch.Tensor, kinds: EdgeKinds | None) -> torch.Tensor:
    """(groups, M, F) -> (E, groups, F), contiguous, gathered from the kinds when given."""
    values = values.transpose(0, 1)
    return values.contiguous() if kinds is None else values.index_select(0, kinds.of_edge)


def node_update(
    node: NodeUpdate, h: torch.Tensor, h0: InitialFeatures, scores: torch.Tensor,
    messages: torch.Tensor, kinds: EdgeKinds | None, ops: GraphOps,
    receivers: cpu_kernels.ReceiverIndex | None = None, in_receiver_order: bool = False,
) -> torch.Tensor:  # fmt: skip
    """Eq. 1b-1d given the score and message networks' outputs (heads, M, F) each; with
    ``receivers``, eq. 1b and the aggregate run as one CPU kernel (``in_receiver_order``: the
    outputs hold the edges in ``receivers``' order)."""
    if receivers is not None:
        rows = None if kinds is None else kinds.of_edge
        aggregate = cpu_kernels.attention_aggregate(scores, messages, receivers, rows, in_receiver_order=in_receiver_order)
    else:
        scores, messages = _edge_major(scores, kinds), _edge_major(messages, kinds)
        attention = ops.edge_softmax(scores)
        aggregate = ops.aggregate((attention * messages).mean(dim=1))
    if node.damping is None:
        # h0 depends on the element only: the hypernetworks run once per element.
        update = apply_hyper_mlp(node.update, aggregate, h0.per_element, index=h0.element_index)
    else:
        update = apply_hyper_mlp(node.update, aggregate, node.hyper_input(h0.values, aggregate))
    return h + update


def paper_edge_update(
    edge: PaperEdgeUpdate, scores: torch.Tensor, messages: torch.Tensor, edges: EdgeSet,
    kinds: EdgeKinds | None,
) -> EdgeFeatures:  # fmt: skip
    """Eq. 2b-2d given the score and message networks' outputs (heads, M, F) each; with ``kinds``
    (first step) the result is a table with one row per edge kind. Per edge on CPU, the attention
    over heads and the FCNN run as one kernel."""
    if kinds is None and cpu_kernels.applies(scores, "edge_update"):
        change = cpu_kernels.head_attention_fcnn(scores, messages, edge.fcnn)
    else:
        attention = torch.softmax(scores, dim=0)  # heads lead: the softmax over heads is over dim 0
        change = edge.fcnn((attention * messages).sum(dim=0))
    updated = edges.e.values() + change
    if kinds is None:
        return EdgeFeatures(edges.e.row, per_edge=updated)
    return EdgeFeatures(kinds.of_edge, table=updated)
