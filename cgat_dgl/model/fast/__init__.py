"""The fast implementation of eq. 1 and 2: the same computation as the plain DGL layers of
``cgat_dgl.model.node_update`` and ``edge_update``, reordered so that it costs less, on either
message-passing backend (``cgat_dgl.ops``). Chosen with ``ModelConfig.implementation = "fast"``;
tests check it against the plain layers.

What it does differently, each exact up to floating-point rounding:

- The first layer of each edge network, W [h_i || h_j || e_ij] + b, is computed as
  W_i h_i + W_j h_j + W_e e_ij + b with the node terms projected once per atom and gathered
  (``networks``); when every atom sends the same number of edges, in order, the sender term is a
  broadcast instead of a gather.
- The node and edge updates of a step read the same z_ij, so their networks run as one.
- Edge features start as a function of the shell rank (``edge_features``): per-edge functions of
  them cost a row per rank until they differ per edge.
- At the first step h = h0 depends on the element alone, so everything computed from z_ij depends
  only on the edge's kind (element_i, element_j, rank); the first step evaluates its networks once
  per kind, about a tenth of the edges of a batch.
- The hypernetwork update applies the generated layers without forming per-atom weight matrices
  (``hypernetwork``); at the first step, whose hypernetwork input h0 depends on the element alone,
  it forms one matrix per element instead.
"""

from cgat_dgl.model.fast.message_passing import fast_message_passing

__all__ = ["fast_message_passing"]
