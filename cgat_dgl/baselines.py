"""The baselines every transfer is shown beside: closed-form predictors fitted on the training subset.

A baseline learns nothing a network learns, so a transfer that does not beat it has not earned its
cost: the training median (``median``); the material's own source value (``source_value``, e.g. its
PBE gap as its HSE gap) and a linear correction of it (``source_linear``); a linear model over the
element fractions of the formula (``composition_linear``, the analogue of refitting per-element
reference energies); and the pre-trained source model applied unchanged (``source_model``). The
linear fits minimise the absolute error, the metric the report compares on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.optimize import linprog

from .data.dataset import GraphDataset
from .strategies import Fit
from .training.delta import known_baseline, model_baseline

N_ELEMENTS = 119  # atomic numbers 0..118
# A baseline's stop reason: fitted in closed form, so there is no training to converge.
FITTED = "fitted"


def least_absolute_deviations(features: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """The coefficients ``w`` minimising ``sum |features @ w - targets|``, as a linear programme:
    minimise ``sum(u + v)`` subject to ``features @ w + u - v = targets``, ``u, v >= 0``."""
    n, p = features.shape
    cost = np.concatenate([np.zeros(p), np.ones(2 * n)])
    identity = sparse.identity(n, format="csr")
    equality = sparse.hstack([sparse.csr_matrix(features), identity, -identity], format="csr")
    bounds = [(None, None)] * p + [(0, None)] * (2 * n)
    found = linprog(cost, A_eq=equality, b_eq=targets, bounds=bounds, method="highs")
    if not found.success:
        raise RuntimeError(f"least-absolute-deviations fit failed: {found.message}")
    return np.asarray(found.x[:p])


def element_fractions(dataset: GraphDataset) -> np.ndarray:
    """One row per material: the fraction of its atoms of each atomic number (columns 0..118)."""
    rows = np.zeros((len(dataset), N_ELEMENTS))
    for i, graph in enumerate(dataset.graphs):
        counts = np.bincount(np.asarray(graph.atomic_numbers, dtype=np.int64), minlength=N_ELEMENTS)
        rows[i] = counts / counts.sum()
    return rows


def fit_predictions(
    fit: Fit,
    train: GraphDataset,
    evaluate: Sequence[GraphDataset],
    source_values: pd.Series | None = None,
    source: str = "source",
    checkpoint: Path | None = None,
    backend: str | None = None,
) -> dict[str, float]:
    """The baseline ``fit``, fitted on ``train``, predicting every material of ``evaluate``, by id.

    ``source_values``: the source property of every material (``source_value``, ``source_linear``);
    ``checkpoint``: the pre-trained source model (``source_model``)."""
    targets = train.targets.astype(np.float64)
    ids = [graph_id for dataset in evaluate for graph_id in dataset.ids]
    if fit == "median":
        return dict.fromkeys(ids, float(np.median(targets)))
    if fit == "source_model":
        if checkpoint is None:
            raise ValueError("the source_model baseline needs the pre-trained model's checkpoint")
        return model_baseline(checkpoint, list(evaluate), backend=backend)
    if fit in ("source_value", "source_linear"):
        if source_values is None:
            raise ValueError(f"the {fit} baseline needs the {source} value of every material")
        known = known_baseline(source_values, [*train.ids, *ids], source)
        if fit == "source_value":
            return {graph_id: known[graph_id] for graph_id in ids}
        x = np.asarray([known[graph_id] for graph_id in train.ids])
        intercept, slope = least_absolute_deviations(np.column_stack([np.ones_like(x), x]), targets)
        return {graph_id: float(intercept + slope * known[graph_id]) for graph_id in ids}
    if fit == "composition_linear":
        fractions = element_fractions(train)
        seen = fractions.any(axis=0)  # elements absent from training get no coefficient (contribute 0)
        weights = least_absolute_deviations(fractions[:, seen], targets)
        out: dict[str, float] = {}
        for dataset in evaluate:
            predicted = element_fractions(dataset)[:, seen] @ weights
            out.update(zip(dataset.ids, predicted.astype(float).tolist()))
        return out
    raise ValueError(f"unknown baseline fit {fit!r}; known: median, source_value, source_linear, composition_linear, source_model")


def predictions_of(dataset: GraphDataset, predicted: Mapping[str, float]) -> np.ndarray:
    """``predicted`` in the order of ``dataset``."""
    return np.asarray([predicted[graph_id] for graph_id in dataset.ids], dtype=np.float64)
