"""The update network G of eq. 1d, whose weights are generated per node by hypernetworks."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from cgat_dgl.model.layers import GroupedLinear

# Depth of G: three [Linear, LayerNorm (no affine), tanh] blocks, then a Linear.
UPDATE_DEPTH = 4
# The hypernetworks' last layers start small so that the generated weights do too.
OUTPUT_INIT_SCALE = 0.1


class HyperMLP(nn.Module):
    """G(x) with the weights and biases of each layer generated from ``hyper_input`` per node.

    One hypernetwork per layer of G maps F -> ``hyper_layers`` x [hyper_hidden, tanh] -> F*F + F
    (a weight matrix, laid out (in, out), and a bias). The hidden layers of the four hypernetworks
    share their input and run as one grouped network.
    """

    def __init__(self, features: int, hyper_hidden: int, hyper_layers: int) -> None:
        super().__init__()
        self.features = features
        self.hyper_hidden = hyper_hidden
        self.generator_in = nn.Linear(features, UPDATE_DEPTH * hyper_hidden)
        self.generator_hidden = nn.ModuleList(
            GroupedLinear(UPDATE_DEPTH, hyper_hidden, hyper_hidden) for _ in range(hyper_layers - 1)
        )
        # The F*F + F outputs of each hypernetwork, as a weight and a bias generator.
        self.weight_out = nn.ModuleList(
            nn.Linear(hyper_hidden, features * features) for _ in range(UPDATE_DEPTH)
        )
        self.bias_out = nn.ModuleList(nn.Linear(hyper_hidden, features) for _ in range(UPDATE_DEPTH))
        bound = OUTPUT_INIT_SCALE / hyper_hidden**0.5  # nn.Linear's default range, shrunk
        for layer in [*self.weight_out, *self.bias_out]:
            nn.init.uniform_(layer.weight, -bound, bound)
            nn.init.uniform_(layer.bias, -bound, bound)

    def hidden(self, hyper_input: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The last hidden layer of each layer's hypernetwork, (N, hyper_hidden) each."""
        n = hyper_input.shape[0]
        z = torch.tanh(self.generator_in(hyper_input)).view(n, UPDATE_DEPTH, self.hyper_hidden)
        z = z.transpose(0, 1)
        for layer in self.generator_hidden:
            z = torch.tanh(layer(z))
        return z.unbind(0)

    def generated_product_terms(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """x W(z) with W(z) = reshape(A z + c) as (x (x) z) A' + x C: A laid out (F * hyper_hidden, F)
        and c as (F, F), the terms of a product that forms no per-node matrix."""
        f, k = self.features, self.hyper_hidden
        generator = self.weight_out[layer]
        return generator.weight.view(f, f, k).transpose(1, 2).reshape(f * k, f), generator.bias.view(f, f)

    def forward(self, x: torch.Tensor, hyper_input: torch.Tensor) -> torch.Tensor:
        """G(x) for every row of x, G's weights generated from the same row of ``hyper_input``."""
        n, f = x.shape
        for layer, z in enumerate(self.hidden(hyper_input)):
            weight = self.weight_out[layer](z).view(n, f, f)  # theta: per-node W and b
            bias = self.bias_out[layer](z)
            x = torch.baddbmm(bias.unsqueeze(1), x.unsqueeze(1), weight).squeeze(1)
            if layer < UPDATE_DEPTH - 1:
                x = torch.tanh(F.layer_norm(x, (f,)))
        return x
