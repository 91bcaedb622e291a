"""Running a trained model: evaluation over a dataset, prediction, and loading a checkpoint."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..graphs.collate import make_loader
from ..model import CGAT, ModelConfig
from .checkpoint import load_model_state, read_checkpoint
from .normalization import Normalizer

# Per-material test predictions of the best checkpoint: the report bootstraps over test materials.
TEST_PREDICTIONS_NAME = "test_predictions.csv"
PREDICTIONS_ARTIFACT_DIR = "predictions"


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def model_backend(model: nn.Module, default: str = "dgl") -> str:
    config = getattr(model, "config", None)
    return getattr(config, "backend", default) or default


@torch.no_grad()
def predict_loader(
    model: nn.Module, normalizer: Normalizer, loader: Iterable[Any], amp_dtype: torch.dtype | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Predictions in target units, the targets the batches carried, and the ids, in loader order."""
    device = model_device(model)
    was_training = model.training
    model.eval()
    predictions: list[np.ndarray] = []
    targets: list[np.ndarray] = []
    ids: list[str] = []
    try:
        for batch in loader:
            batch = batch.to(device)
            with torch.autocast(device.type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None):
                output = model(batch)
            predictions.append(normalizer.decode(output[:, 0].float()).cpu().numpy())
            if batch.targets is not None:
                targets.append(batch.targets.float().cpu().numpy())
            ids.extend(batch.ids)
    finally:
        model.train(was_training)
    empty = np.zeros(0, dtype=np.float32)
    return (
        np.concatenate(predictions) if predictions else empty,
        np.concatenate(targets) if targets else empty,
        ids,
    )


def predict_with_targets(
    model: nn.Module,
    normalizer: Normalizer,
    dataset: Sequence[Any],
    batch_size: int,
    *,
    backend: str | None = None,
    num_workers: int = 0,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Predictions, targets and ids for every item of ``dataset``, in order (no batch is dropped)."""
    loader = make_loader(
        dataset, batch_size, shuffle=False, backend=backend or model_backend(model), num_workers=num_workers
    )
    return predict_loader(model, normalizer, loader)


def predict(model: nn.Module, normalizer: Normalizer, dataset: Sequence[Any], batch_size: int = 256) -> np.ndarray:
    """Predictions in target units for every item of ``dataset`` (items are ``(CrystalGraph, target)``)."""
    return predict_with_targets(model, normalizer, dataset, batch_size)[0]


def load_checkpoint(
    path: Path | str, device: str | torch.device = "cpu", backend: str | None = None, implementation: str | None = None
) -> tuple[CGAT, Normalizer, dict[str, Any]]:
    """The model (eval mode), its normalisation and the checkpoint dict (configs, history, metadata);
    ``backend`` and ``implementation`` replace the saved ones (same parameters, other computation)."""
    state = read_checkpoint(path)
    config_values = dict(state["model_config"])
    if backend is not None:
        config_values["backend"] = backend
    if implementation is not None:
        config_values["implementation"] = implementation
    model = CGAT(ModelConfig(**config_values))
    load_model_state(model, state["model_state"], path)
    normalizer = Normalizer.from_dict(state["normalization"])
    model.to(device).eval()
    normalizer.to(device)
    return model, normalizer, state


def write_predictions(path: Path, ids: Sequence[str], actual: np.ndarray, predicted: np.ndarray) -> Path:
    """id, target, prediction per material, in target units."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "target", "prediction"])
        for row in zip(ids, np.asarray(actual, float).tolist(), np.asarray(predicted, float).tolist()):
            writer.writerow([row[0], f"{row[1]:.9g}", f"{row[2]:.9g}"])
    return path
