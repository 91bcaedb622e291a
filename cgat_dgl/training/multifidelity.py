"""Multi-fidelity joint training (Chen et al. 2021): one model on cheap and accurate targets at once.

Every item carries its fidelity index (``SOURCE`` for the cheap level, ``TARGET`` for the accurate
one); the model adds a learned vector per fidelity to its global context. The cheap data is far
larger, so an epoch does not run over all of it: it holds every target structure once plus
``source_ratio`` times as many source structures, drawn anew each epoch (without replacement) from
the source pool. With ``source_ratio = 2`` a third of each epoch is the target fidelity, however
large the pool; over the epochs the draws still cover much of the pool.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..data.dataset import GraphDataset
from ..graphs.crystal_graph import CrystalGraph

SOURCE = 0
TARGET = 1
N_FIDELITIES = 2


class FidelityDataset:
    """A dataset whose items are (graph, target, fidelity), every item of one fidelity."""

    def __init__(self, dataset: GraphDataset, fidelity: int) -> None:
        self.dataset = dataset
        self.fidelity = int(fidelity)

    @property
    def ids(self) -> list[str]:
        return self.dataset.ids

    @property
    def targets(self) -> np.ndarray:
        return self.dataset.targets

    @property
    def fidelities(self) -> np.ndarray:
        return np.full(len(self.dataset), self.fidelity, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[CrystalGraph, float, int]:
        graph, target = self.dataset[index]
        return graph, target, self.fidelity


class JointDataset:
    """The items of several fidelities in one sequence (the order of the parts, then of each part)."""

    def __init__(self, parts: Sequence[FidelityDataset]) -> None:
        self.parts = list(parts)
        self._index = [(p, i) for p, part in enumerate(self.parts) for i in range(len(part))]

    @property
    def ids(self) -> list[str]:
        return [graph_id for part in self.parts for graph_id in part.ids]

    @property
    def targets(self) -> np.ndarray:
        return np.concatenate([part.targets for part in self.parts]).astype(np.float32)

    @property
    def fidelities(self) -> np.ndarray:
        return np.concatenate([part.fidelities for part in self.parts])

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, index: int) -> tuple[CrystalGraph, float, int]:
        part, position = self._index[index]
        return self.parts[part][position]


class JointTrainingSet:
    """The training set of a joint run: all of ``target`` and a fresh draw from ``source`` each epoch.

    The trainer asks ``epoch_view(seed)`` for the epoch's items; the same seed gives the same draw,
    so a resumed run sees the epochs it would have seen. A training material with both values is
    in both parts: its two targets are two labels at two fidelities.
    """

    def __init__(self, source: GraphDataset, target: GraphDataset, source_ratio: float) -> None:
        if not source_ratio > 0:
            raise ValueError(f"source_ratio must be positive, got {source_ratio}")
        self.source = source
        self.target = target
        self.source_ratio = float(source_ratio)

    @property
    def source_per_epoch(self) -> int:
        return min(len(self.source), int(round(self.source_ratio * len(self.target))))

    @property
    def ids(self) -> list[str]:
        """Every material the joint run can train on, at either fidelity."""
        return [*self.source.ids, *self.target.ids]

    @property
    def targets(self) -> np.ndarray:
        """The targets of every item it can train on (the normalisation is fitted on them)."""
        return np.concatenate([self.source.targets, self.target.targets]).astype(np.float32)

    def __len__(self) -> int:
        """The structures of one epoch."""
        return len(self.target) + self.source_per_epoch

    def epoch_view(self, seed: int) -> JointDataset:
        chosen = np.random.default_rng(seed).choice(len(self.source), size=self.source_per_epoch, replace=False)
        drawn = self.source.subset([self.source.ids[i] for i in np.sort(chosen)])
        return JointDataset([FidelityDataset(drawn, SOURCE), FidelityDataset(self.target, TARGET)])


def check_no_evaluation_material(training_ids: Sequence[str], evaluation: dict[str, Sequence[str]]) -> None:
    """Raise if a validation or test material of the target is in the joint training set (any fidelity)."""
    training = set(training_ids)
    for name, ids in evaluation.items():
        leaked = sorted(training & set(ids))
        if leaked:
            raise ValueError(
                f"{len(leaked)} {name} material(s) of the target are in the joint training set, e.g. {leaked[:3]}: "
                "the source pool must exclude the target's validation and test materials"
            )
