"""Target normalisation: the mean and standard deviation the model's output is scaled by."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class Normalizer(nn.Module):
    """Holds target mean/std as buffers, so they move with the model and land in its state."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: float = 0.0, std: float = 1.0) -> None:
        super().__init__()
        if not std > 0:
            raise ValueError(f"normalisation std must be positive, got {std}")
        self.register_buffer("mean", torch.tensor(float(mean), dtype=torch.float32))
        self.register_buffer("std", torch.tensor(float(std), dtype=torch.float32))

    @classmethod
    def fit(cls, targets: np.ndarray | torch.Tensor) -> "Normalizer":
        values = np.asarray(targets, dtype=np.float64)
        values = values[np.isfinite(values)]
        if values.size == 0:
            raise ValueError("cannot fit a normalisation on an empty set of targets")
        std = float(values.std())
        # A constant target (e.g. all metals, gap 0) would divide by zero; scale 1 keeps the loss in units.
        return cls(float(values.mean()), std if std > 1e-12 else 1.0)

    def encode(self, values: torch.Tensor) -> torch.Tensor:
        return (values - self.mean) / self.std

    def decode(self, values: torch.Tensor) -> torch.Tensor:
        return values * self.std + self.mean

    def as_dict(self) -> dict[str, float]:
        return {"mean": float(self.mean), "std": float(self.std)}

    @classmethod
    def from_dict(cls, values: dict[str, float]) -> "Normalizer":
        return cls(values["mean"], values["std"])

    def extra_repr(self) -> str:
        return f"mean={float(self.mean):.6g}, std={float(self.std):.6g}"
