"""Real crystal graphs for the model, collate and ops tests.

Until the project's graph builder is available, graphs are built here from pymatgen neighbour
lists with the same conventions (24 nearest per atom, shell ranks with the 1e-8 rule, src = the
listing atom, dst = the listed neighbour, fully connected composition graph).
"""

from __future__ import annotations

import gzip
import json
import warnings
from functools import lru_cache
from itertools import islice
from pathlib import Path

import numpy as np
from pymatgen.core import Structure

from cgat_dgl.graphs.crystal_graph import CrystalGraph

MAX_NBR = 24
SHELL_TOLERANCE = 1e-8


@lru_cache(maxsize=4)
def read_records(path: Path, count: int) -> tuple[tuple[str, Structure, float], ...]:
    """The first ``count`` records of the shared file: (id, structure, e_form_pbe)."""
    out = []
    with gzip.open(path, "rt") as handle, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pymatgen notes rounded fractional coordinates
        for line in islice(handle, count):
            row = json.loads(line)
            out.append((row["id"], Structure.from_str(row["cif"], fmt="cif"), float(row["e_form_pbe"])))
    return tuple(out)


def _sorted_neighbours(structure: Structure, max_nbr: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    radius = 6.0
    while True:
        centers, points, _, distances = structure.get_neighbor_list(radius)
        counts = np.bincount(centers, minlength=len(structure))
        if counts.min() > max_nbr:  # one extra to see whether a shell straddles the cut
            break
        radius *= 1.5
    order = np.lexsort((distances, centers))
    return centers[order], points[order], distances[order]


def cut_splits_a_shell(structure: Structure, max_nbr: int = MAX_NBR) -> bool:
    """Whether some atom's max_nbr-th and next neighbours are equally far (the choice is arbitrary)."""
    centers, _, distances = _sorted_neighbours(structure, max_nbr)
    starts = np.searchsorted(centers, np.arange(len(structure)))
    return bool(np.any(distances[starts + max_nbr] - distances[starts + max_nbr - 1] <= 1e-6))


def graph_from_structure(record_id: str, structure: Structure, max_nbr: int = MAX_NBR) -> CrystalGraph:
    centers, points, distances = _sorted_neighbours(structure, max_nbr)
    n = len(structure)
    starts = np.searchsorted(centers, np.arange(n))
    keep = (starts[:, None] + np.arange(max_nbr)[None, :]).ravel()
    src, dst, dist = centers[keep], points[keep], distances[keep].reshape(n, max_nbr)
    steps = np.diff(dist, axis=1) > SHELL_TOLERANCE
    rank = np.concatenate([np.ones((n, 1), dtype=np.int64), 1 + np.cumsum(steps, axis=1)], axis=1)

    numbers = np.array(structure.atomic_numbers, dtype=np.int16)
    elements, counts = np.unique(numbers, return_counts=True)
    m = len(elements)
    pair_src, pair_dst = np.nonzero(~np.eye(m, dtype=bool))
    return CrystalGraph(
        id=record_id,
        atomic_numbers=numbers,
        edge_src=src.astype(np.int32),
        edge_dst=dst.astype(np.int32),
        edge_rank=rank.ravel().astype(np.int8),
        comp_elements=elements.astype(np.int16),
        comp_fractions=(counts / n).astype(np.float32),
        comp_src=pair_src.astype(np.int32),
        comp_dst=pair_dst.astype(np.int32),
    )


@lru_cache(maxsize=4)
def real_graphs(path: Path, count: int) -> tuple[tuple[CrystalGraph, float], ...]:
    """Graphs and formation energies of the first ``count`` structures of the shared file."""
    return tuple((graph_from_structure(rid, s), target) for rid, s, target in read_records(path, count))
