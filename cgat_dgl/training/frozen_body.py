"""Head-only transfer on crystal features computed once.

When every module group but the regression head is frozen, the pooled crystal vector the head reads is
a fixed function of the structure (frozen groups run in eval mode). Running the frozen body once per
structure and training the head on its output gives the same model as running the body every epoch,
for the cost of one forward pass over the data instead of one per epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from cgat_dgl.model.cgat import CGAT
from cgat_dgl.training.transfer import HEAD_GROUP, FreezePlan


@dataclass
class FeatureBatch:
    """Crystal features (C, width) with their targets and ids: what the head of a batch sees."""

    ids: list[str]
    features: torch.Tensor
    targets: torch.Tensor | None

    @property
    def num_crystals(self) -> int:
        return len(self.ids)

    def to(self, device: torch.device | str) -> "FeatureBatch":
        targets = None if self.targets is None else self.targets.to(device)
        return FeatureBatch(self.ids, self.features.to(device), targets)


class FeatureSet(Dataset):
    """One dataset's crystal features, in the dataset's order."""

    def __init__(self, ids: list[str], features: torch.Tensor, targets: torch.Tensor | None) -> None:
        self.ids, self.features, self.targets = ids, features, targets

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[str, torch.Tensor, torch.Tensor | None]:
        return self.ids[index], self.features[index], None if self.targets is None else self.targets[index]


def collate_features(items: list[tuple[str, torch.Tensor, torch.Tensor | None]]) -> FeatureBatch:
    ids = [item[0] for item in items]
    targets = None if items[0][2] is None else torch.stack([item[2] for item in items])  # type: ignore[misc]
    return FeatureBatch(ids, torch.stack([item[1] for item in items]), targets)


class HeadOnFeatures(nn.Module):
    """The model's regression head applied to precomputed crystal features."""

    def __init__(self, model: CGAT) -> None:
        super().__init__()
        self.head = model.head

    def forward(self, batch: FeatureBatch) -> torch.Tensor:
        return self.head(batch.features)


def applies(model: nn.Module, plan: FreezePlan, train_set: Sequence[Any]) -> bool:
    """Whether only the head trains on a fixed training set (a multi-fidelity draw changes per epoch)."""
    return isinstance(model, CGAT) and plan.trainable == [HEAD_GROUP] and not hasattr(train_set, "epoch_view")


@torch.no_grad()
def crystal_features(model: CGAT, loader: DataLoader, device: torch.device) -> FeatureSet:
    """The frozen body's output for every structure of ``loader`` (unshuffled), in its order."""
    was_training = model.training
    model.eval()
    ids: list[str] = []
    features: list[torch.Tensor] = []
    targets: list[torch.Tensor] = []
    try:
        for batch in loader:
            batch = batch.to(device)
            features.append(model.crystal_features(batch).float())
            if batch.targets is not None:
                targets.append(batch.targets)
            ids.extend(batch.ids)
    finally:
        model.train(was_training)
    width = model.config.pooled_width
    stacked = torch.cat(features) if features else torch.zeros(0, width, device=device)
    return FeatureSet(ids, stacked, torch.cat(targets) if targets else None)
