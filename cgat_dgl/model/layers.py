"""Small building blocks: a one-hidden-layer MLP and per-head MLPs evaluated for all heads at once."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class MLP(nn.Sequential):
    """in -> hidden -> out with LeakyReLU: the "FCNN" of the paper."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int) -> None:
        super().__init__(nn.Linear(in_dim, hidden), nn.LeakyReLU(), nn.Linear(hidden, out_dim))

    @property
    def first(self) -> nn.Linear:
        return self[0]  # type: ignore[return-value]

    @property
    def second(self) -> nn.Linear:
        return self[2]  # type: ignore[return-value]


class GroupedLinear(nn.Module):
    """``groups`` independent Linear(in, out) layers, applied to (groups, K, in) in one ``baddbmm``.

    Groups lead (group-major layout) because that is the batched-matrix-product layout: the
    input may be a transposed view of (K, groups, in) and the output needs no copy.
    """

    def __init__(self, groups: int, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(groups, in_dim, out_dim))
        self.bias = nn.Parameter(torch.empty(groups, 1, out_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # nn.Linear's default range.
        bound = 1.0 / math.sqrt(self.weight.shape[1])
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class MultiHeadMLP(nn.Module):
    """One MLP (in -> hidden -> out, LeakyReLU) per head, all heads batched.

    The heads share their input, so the first layers of all heads are one Linear(in, heads*hidden)
    and the second layers one grouped product. Output: (K, heads, out).
    """

    def __init__(self, in_dim: int, hidden: int, out_dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.hidden = hidden
        self.first = nn.Linear(in_dim, heads * hidden)
        self.second = GroupedLinear(heads, hidden, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.finish(self.first(x)).transpose(0, 1)

    def finish(self, first_layer_out: torch.Tensor) -> torch.Tensor:
        """Second layers given the first layers' output (K, heads*hidden) -> (heads, K, out)."""
        hidden = F.leaky_relu(first_layer_out).view(-1, self.heads, self.hidden)
        return self.second(hidden.transpose(0, 1))
