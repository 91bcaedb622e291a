"""Delta learning (Smith et al.): learn the accurate target as a correction to a cheap baseline.

The baseline of a material is either the pre-trained source model's prediction (``delta``) or the
cheap property's known value (``delta_known``, e.g. the PBE gap for the HSE gap, which must then be
known for every material predicted). The model is trained on ``target - baseline``; its prediction
of the target is ``baseline + correction``. The MAE of the corrections is the MAE of the targets, so
the best epoch by validation MAE is the same either way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..data.dataset import GraphDataset
from .inference import load_checkpoint, predict_with_targets


def residual_dataset(dataset: GraphDataset, baseline: Mapping[str, float]) -> GraphDataset:
    """The dataset with targets ``target - baseline`` (every id needs a baseline)."""
    missing = [graph_id for graph_id in dataset.ids if graph_id not in baseline]
    if missing:
        raise KeyError(f"{len(missing)} material(s) have no baseline value, e.g. {missing[:3]}")
    offsets = np.asarray([baseline[graph_id] for graph_id in dataset.ids], dtype=np.float64)
    return GraphDataset(dataset.ids, dataset.graphs, (dataset.targets.astype(np.float64) - offsets).astype(np.float32))


def add_back(baseline: Mapping[str, float]):
    """The trainer's ``to_target_units`` of a correction model: predictions and targets plus each
    material's baseline, so that metrics and prediction files are of the target itself."""

    def to_target_units(ids: Sequence[str], predicted: np.ndarray, actual: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        offsets = np.asarray([baseline[graph_id] for graph_id in ids], dtype=np.float64)
        return predicted + offsets, actual + offsets

    return to_target_units


def model_baseline(
    checkpoint: Path | str, datasets: Sequence[GraphDataset], batch_size: int = 256, backend: str | None = None
) -> dict[str, float]:
    """The source model's prediction of every material of ``datasets``, by id (in its own units)."""
    model, normalizer, _ = load_checkpoint(checkpoint, backend=backend)
    baseline: dict[str, float] = {}
    for dataset in datasets:
        predicted, _, ids = predict_with_targets(model, normalizer, dataset, batch_size, backend=backend)
        baseline.update(zip(ids, np.asarray(predicted, dtype=np.float64).tolist()))
    return baseline


def known_baseline(values: pd.Series, ids: Sequence[str], source: str) -> dict[str, float]:
    """The known ``source`` value of every material of ``ids``; a missing value is an error, since
    this strategy cannot predict a material whose cheap property is unknown."""
    chosen = values.reindex(list(ids))
    missing = chosen.index[chosen.isna()].tolist()
    if missing:
        raise ValueError(
            f"delta_known needs the {source} value of every material it trains on or predicts; "
            f"{len(missing)} have none, e.g. {missing[:3]}"
        )
    return {str(k): float(v) for k, v in chosen.items()}
