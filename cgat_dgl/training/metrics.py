"""Regression metrics in target units."""

from __future__ import annotations

import numpy as np


def regression_metrics(predicted: np.ndarray, actual: np.ndarray) -> dict[str, float]:
    predicted = np.asarray(predicted, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    if predicted.shape != actual.shape:
        raise ValueError(f"shape mismatch: predicted {predicted.shape}, actual {actual.shape}")
    if actual.size == 0:
        raise ValueError("no samples to score")
    error = predicted - actual
    total = float(((actual - actual.mean()) ** 2).sum())
    residual = float((error**2).sum())
    return {
        "mae": float(np.abs(error).mean()),
        "rmse": float(np.sqrt((error**2).mean())),
        # R² is undefined for a constant target; NaN says so instead of a misleading number.
        "r2": 1.0 - residual / total if total > 0 else float("nan"),
    }
