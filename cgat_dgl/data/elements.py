"""Matscholar (mat2vec) element embeddings, the CGAT starting features, as matminer ships them."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

import numpy as np

EMBEDDING_DIM = 200
MAX_Z = 118


@lru_cache(maxsize=1)
def matscholar_table() -> np.ndarray:
    """A (MAX_Z + 1, 200) float32 table indexed by atomic number; rows of unsupported elements are 0."""
    path = resources.files("matminer") / "utils" / "data_files" / "matscholar_els.json"
    raw: dict[str, list[float]] = json.loads(path.read_text())
    from pymatgen.core.periodic_table import Element  # here: the model imports this module on GPU machines without pymatgen

    table = np.zeros((MAX_Z + 1, EMBEDDING_DIM), dtype=np.float32)
    for symbol, vector in raw.items():
        table[Element(symbol).Z] = np.asarray(vector, dtype=np.float32)
    return table


@lru_cache(maxsize=1)
def supported_atomic_numbers() -> frozenset[int]:
    """Atomic numbers with an embedding (H..Lr in the matscholar table)."""
    table = matscholar_table()
    return frozenset(int(z) for z in np.nonzero(np.abs(table).sum(axis=1) > 0)[0])
