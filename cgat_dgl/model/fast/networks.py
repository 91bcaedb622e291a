"""Edge networks evaluated from node terms: W [h_i || h_j || e_ij] + b = W_i h_i + W_j h_j + W_e e_ij + b."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn import functional as F

from cgat_dgl.model.edge_networks import EdgeNetworks
from cgat_dgl.model.fast import cpu_kernels
from cgat_dgl.model.fast.edge_features import EdgeSet


def evaluate_networks(
    networks: Sequence[EdgeNetworks], edges: EdgeSet, receiver_order: cpu_kernels.ReceiverIndex | None = None
) -> tuple[torch.Tensor, ...]:
    """Every group of every network for every member of ``edges``: the score and message groups of
    each network in turn, (heads, M, F) each, group-major. With ``receiver_order`` the first
    network's two hold the members in that order (what the attention of the node update reads).

    The networks read the same z and run as one: their first layers are stacked into one
    projection and their second layers into one grouped product. The node terms are projected
    once per row of h and gathered (each atom has max_nbr edges), the bias folded into the
    receiver term. On CPU, after the first step (whose members are the edge kinds), the whole evaluation
    runs as one tiled kernel (``cpu_kernels``) that keeps the (M, hidden) layer out of memory.
    """
    features, hidden_width = networks[0].features, networks[0].hidden
    weight = torch.cat([n.first_layer.weight for n in networks])
    bias = torch.cat([n.first_layer.bias for n in networks])
    w_receiver, w_sender, w_edge = weight.split(features, dim=1)

    heads = networks[0].heads
    groups = 2 * heads * len(networks)
    second_weight = torch.cat([n.second_layer.weight for n in networks])
    second_bias = torch.cat([n.second_layer.bias for n in networks])
    receiver_term = torch.addmm(bias, edges.h, w_receiver.t())
    sender = edges.h @ w_sender.t()
    e = edges.e
    if edges.sender_block is not None and cpu_kernels.applies(sender, "edge_networks"):
        block, tiled = edges.sender_block, cpu_kernels.tiled_edge_networks
        args = (receiver_term, sender, edges.receiver, block, second_weight, second_bias, heads)
        order = {"receiver_order": receiver_order, "ordered_parts": 2}
        if e.per_edge is not None:
            return tiled(*args, features=e.per_edge, weight=w_edge, **order)
        assert e.table is not None
        return tiled(*args, table=e.table @ w_edge.t(), rows=e.row, **order)

    receiver = receiver_term.index_select(0, edges.receiver)
    # Out of place: in-place updates of views make autograd copy whole tensors in the backward.
    if edges.sender_block is not None:
        width = receiver.shape[1]
        hidden = (receiver.view(-1, edges.sender_block, width) + sender.unsqueeze(1)).view(-1, width)
    else:
        hidden = receiver + sender.index_select(0, edges.sender)
    if e.per_edge is not None:
        hidden = torch.addmm(hidden, e.per_edge, w_edge.t())
    else:
        assert e.table is not None
        hidden = hidden + (e.table @ w_edge.t()).index_select(0, e.row)
    hidden = F.leaky_relu(hidden, inplace=True)
    # One split rather than slices: the backward of a split is one concatenation, while each
    # slice's backward writes a zero tensor of the whole size.
    out = torch.baddbmm(second_bias, hidden.view(-1, groups, hidden_width).transpose(0, 1), second_weight)
    parts = out.split(heads)
    if receiver_order is None:
        return parts
    return tuple(p.index_select(1, receiver_order.order) for p in parts[:2]) + parts[2:]
