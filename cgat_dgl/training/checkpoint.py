"""Checkpoint files: written atomically, readable with ``torch.load(weights_only=True)``.

A checkpoint is a plain dict of tensors, dicts, lists and scalars:
``format``, ``model_state``, ``model_config`` (plain dict), ``train_config``, ``normalization``
(mean/std), ``epoch`` (epochs completed), ``best_epoch``, ``best_val_mae``, ``history``, ``metadata``;
the ``last`` checkpoint adds ``optimizer``, ``scheduler``, ``scaler`` and ``rng`` for resuming.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cgat_dgl.atomic import atomic_write

FORMAT = "cgat-dgl-checkpoint/1"


def save_checkpoint(state: dict[str, Any], path: Path) -> Path:
    """Write to a temporary file beside ``path`` and rename, so a killed run never leaves half a file."""
    path = Path(path)
    with atomic_write(path) as stream:
        torch.save({"format": FORMAT, **state}, stream)
    return path


def read_checkpoint(path: Path | str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # a truncated or foreign file: say which
        raise ValueError(f"{path}: not a readable checkpoint ({error})") from error
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path}: not a cgat-dgl checkpoint (format {state.get('format') if isinstance(state, dict) else None!r})")
    return state


def capture_rng_state() -> dict[str, Any]:
    """Every random generator a training epoch draws from, as weights-only-safe values."""
    np_state = np.random.get_state()
    python_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
        "numpy": {
            "name": str(np_state[0]),
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": [python_state[0], list(python_state[1]), python_state[2]],
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["name"],
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


# Parameter names of checkpoints written before the edge networks had a module of their own.
_RENAMED = ((".first_layer.linear.", ".networks.first_layer."), (".second_layer.", ".networks.second_layer."))


def _current_names(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if not any(".first_layer.linear." in name for name in weights):
        return weights
    renamed = {}
    for name, value in weights.items():
        if name.startswith("message_passing.") and ".networks." not in name:
            for old, new in _RENAMED:
                name = name.replace(old, new)
        renamed[name] = value
    return renamed


def load_model_state(model: torch.nn.Module, weights: dict[str, torch.Tensor], source: Path | str) -> None:
    """``load_state_dict`` with an error that names the file (e.g. a checkpoint of an older model version)."""
    try:
        model.load_state_dict(_current_names(weights))
    except RuntimeError as error:
        detail = " ".join(str(error).split())
        raise ValueError(f"{source}: the checkpoint's weights do not fit the model: {detail[:600]}") from error
