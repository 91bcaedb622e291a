"""Checkpoint files: written atomically, readable with ``torch.load(weights_only=True)``.

A checkpoint is a plain dict of tensors, dicts, lists and scalars:
``format``, ``model_state``, ``model_config`` (plain dict), ``train_config``, ``normalization``
(mean/std), ``epoch`` (epochs completed), ``best_epoch``, ``best_val_mae``, ``history``, ``metadata``;
the ``last`` checkpoint adds ``optimizer``, ``scheduler``, ``scaler`` and ``rng`` for resuming.

Integrity: ``save_checkpoint`` adds ``checksum``, a SHA-256 over every other value (tensor dtypes,
shapes and bytes; keys, numbers and strings), and ``read_checkpoint`` recomputes it on what it
loaded. torch.load checks no CRC of its own, so bytes overwritten inside a tensor would otherwise
load silently as other weights. The digest is inside the file, so it appears with the checkpoint by
the same atomic rename and no sidecar can go stale. A file that fails the check, or cannot be
unpickled at all (truncated, overwritten), raises ``DamagedCheckpointError``; files written before
the checksum load unverified. Bytes of the zip that hold no value (alignment padding) may change
without notice, since they change nothing that loads. The digest costs about 0.45 s per 310 MB of
weights (the default model) on a busy 2-core machine, at save and at read.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cgat_dgl.atomic import atomic_write

FORMAT = "cgat-dgl-checkpoint/1"
# The entry holding the digest of all the others, "sha256:<hex>"; absent from older checkpoints.
CHECKSUM = "checksum"


class DamagedCheckpointError(ValueError):
    """A checkpoint that cannot be trusted: unreadable (truncated, overwritten) or failing its checksum.

    Distinct from other ValueErrors (a foreign file, weights of another model) so that a caller can
    treat damage alone as recoverable, e.g. start afresh instead of resuming a damaged last.pt.
    """

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: damaged checkpoint: {problem}")


def state_checksum(state: Mapping[str, Any]) -> str:
    """SHA-256 over the values of a checkpoint dict (its ``checksum`` entry left out), in order.

    Computed over values, not file bytes, so that it can be stored in the file it covers and checked
    on what torch.load returns. Tensors count by dtype, shape and bytes (wherever they live), so
    map_location does not change it.
    """
    digest = hashlib.sha256()
    _feed(digest, {key: value for key, value in state.items() if key != CHECKSUM})
    return "sha256:" + digest.hexdigest()


def _feed(digest: "hashlib._Hash", value: Any) -> None:
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu()
        tensor = (tensor.to_dense() if tensor.layout != torch.strided else tensor).resolve_conj().resolve_neg()
        tensor = tensor.contiguous()
        digest.update(f"T{tensor.dtype}{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(value, Mapping):
        digest.update(f"M{len(value)}\0".encode())
        for key, item in value.items():  # insertion order, which pickling keeps
            _feed(digest, key)
            _feed(digest, item)
    elif isinstance(value, (list, tuple)):
        digest.update(f"L{len(value)}\0".encode())
        for item in value:
            _feed(digest, item)
    elif isinstance(value, (set, frozenset)):
        _feed(digest, sorted(value, key=repr))
    elif isinstance(value, bytes):
        digest.update(f"B{len(value)}\0".encode() + value)
    else:  # None, bool, int, float, str, torch.dtype, torch.device: their repr is exact
        digest.update(f"{type(value).__name__}:{value!r}\0".encode())


def save_checkpoint(state: dict[str, Any], path: Path) -> Path:
    """Write to a temporary file beside ``path`` and rename, so a killed run never leaves half a file.

    The state gets its checksum (any ``checksum`` it carries is recomputed).
    """
    path = Path(path)
    payload = {"format": FORMAT, **{key: value for key, value in state.items() if key != CHECKSUM}}
    payload[CHECKSUM] = state_checksum(payload)
    with atomic_write(path) as stream:
        torch.save(payload, stream)
    return path


def read_checkpoint(path: Path | str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint's dict, its checksum verified and removed.

    FileNotFoundError when there is no file, DamagedCheckpointError when it is unreadable or fails
    its checksum, ValueError when it is some other file. Checkpoints without a checksum (written
    before it existed) load unverified.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # truncated, overwritten or no checkpoint at all: say which file
        detail = " ".join(str(error).split())[:300]
        raise DamagedCheckpointError(path, f"not readable ({type(error).__name__}: {detail})") from error
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path}: not a cgat-dgl checkpoint (format {state.get('format') if isinstance(state, dict) else None!r})")
    stored = state.pop(CHECKSUM, None)
    if stored is not None:
        actual = state_checksum(state)
        if stored != actual:
            problem = f"checksum mismatch (stored {str(stored)[:23]}..., computed {actual[:23]}...)"
            raise DamagedCheckpointError(path, f"{problem}: the file changed after it was written")
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
