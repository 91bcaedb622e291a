"""Training, transfer strategies, checkpoints and tracking of CGAT models.

MLflow is imported only by ``cgat_dgl.training.tracking``; import ``Tracker`` from there. The names
below load on first use, so that the configuration models import without torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "TrainConfig": "cgat_dgl.training.config",
    "load_checkpoint": "cgat_dgl.training.inference",
    "predict": "cgat_dgl.training.inference",
    "Normalizer": "cgat_dgl.training.normalization",
    "TrainResult": "cgat_dgl.training.trainer",
    "train": "cgat_dgl.training.trainer",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
