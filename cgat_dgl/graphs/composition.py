"""The composition graph of a crystal (the Roost branch's input)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CompositionGraph:
    elements: np.ndarray  # (M,) int16, distinct atomic numbers, ascending
    fractions: np.ndarray  # (M,) float32, atomic fractions summing to 1
    src: np.ndarray  # (M * (M - 1),) int32
    dst: np.ndarray  # (M * (M - 1),) int32


def composition_graph(atomic_numbers: np.ndarray) -> CompositionGraph:
    """Distinct elements sorted by Z with their atomic fractions, fully connected, no self-loops."""
    numbers = np.asarray(atomic_numbers)
    if numbers.size == 0:
        raise ValueError("a composition needs at least one atom")
    elements, counts = np.unique(numbers, return_counts=True)
    fractions = (counts / counts.sum()).astype(np.float32)
    n_elements = elements.shape[0]
    src, dst = np.nonzero(~np.eye(n_elements, dtype=bool))
    return CompositionGraph(
        elements=elements.astype(np.int16),
        fractions=fractions,
        src=src.astype(np.int32),
        dst=dst.astype(np.int32),
    )
