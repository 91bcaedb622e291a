"""The output network: a residual MLP with ReZero scalars, then Linear(last, 2)."""

from __future__ import annotations

import torch
from torch import nn


class ResidualBlock(nn.Module):
    """x <- alpha * ReLU(W x + b) + S x; alpha starts at 0 (ReZero), S is a bias-free Linear
    when the width changes and the identity otherwise."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)
        self.shortcut: nn.Module = (
            nn.Identity() if in_dim == out_dim else nn.Linear(in_dim, out_dim, bias=False)
        )
        self.alpha = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.alpha * torch.relu(self.linear(x)) + self.shortcut(x)


class ResidualHead(nn.Module):
    """in_dim -> widths[0] -> ... -> widths[-1] residual blocks, then the (prediction, log-std) layer."""

    def __init__(self, in_dim: int, widths: list[int], outputs: int = 2) -> None:
        super().__init__()
        dims = [in_dim, *widths]
        self.blocks = nn.Sequential(*(ResidualBlock(a, b) for a, b in zip(dims[:-1], dims[1:])))
        self.out = nn.Linear(dims[-1], outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.blocks(x))
