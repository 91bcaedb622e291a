"""The hypernetwork update G(x) without per-atom weight matrices.

A generated layer is x W(z) + b(z) with W(z) = reshape(A z + c) (F x F per atom). Its product is
x W(z) = (x ⊗ z) A' + x C, where A' is A laid out (F * hyper_hidden, F) and C is c as (F, F):
one large matrix product instead of forming and applying N small matrices. On CPU the product
runs as a kernel that never stores x ⊗ z (``cpu_kernels.generated_product``).

Where the hypernetwork input takes few distinct values (h0 at the first step: one per element),
the U distinct matrices W(z) are formed instead, and each row of x is multiplied by its own:
U F x F matrices cost hyper_hidden times fewer operations than N outer products.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from cgat_dgl.model.fast import cpu_kernels
from cgat_dgl.model.hypernetwork import UPDATE_DEPTH, HyperMLP


def apply_hyper_mlp(
    mlp: HyperMLP, x: torch.Tensor, hyper_input: torch.Tensor, index: torch.Tensor | None = None
) -> torch.Tensor:
    """``mlp(x, hyper_input[index])``; ``index`` (default: one row each) maps the rows of x to rows
    of ``hyper_input``. With an index the hypernetworks run once per row of ``hyper_input`` and
    generate one F x F matrix each, which the rows of x that share it are multiplied by."""
    n, f = x.shape
    k = mlp.hyper_hidden
    kernel = cpu_kernels.applies(x, "hypernetwork")
    for layer, z in enumerate(mlp.hidden(hyper_input)):
        bias = mlp.bias_out[layer](z)
        if index is not None:
            weights = mlp.weight_out[layer](z).view(-1, f, f)  # W(z) per row of hyper_input, (in, out)
            if kernel:
                product = cpu_kernels.indexed_product(x, weights, index)
            else:
                product = torch.bmm(x.unsqueeze(1), weights.index_select(0, index)).squeeze(1)
            x = bias.index_select(0, index) + product
        else:
            a, c = mlp.generated_product_terms(layer)
            if kernel:
                x = torch.addmm(bias, x, c) + cpu_kernels.generated_product(x, z, a)
            else:
                outer = (x.unsqueeze(2) * z.unsqueeze(1)).view(n, f * k)
                x = torch.addmm(torch.addmm(bias, x, c), outer, a)
        if layer < UPDATE_DEPTH - 1:
            x = torch.tanh(F.layer_norm(x, (f,)))
    return x
