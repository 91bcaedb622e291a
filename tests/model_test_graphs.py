"""Real crystal graphs for the model, collate and ops tests, built with the project's builder."""

from __future__ import annotations

import gzip
import json
import warnings
from functools import lru_cache
from itertools import islice
from pathlib import Path

import numpy as np
from pymatgen.core import Structure

from cgat_dgl.graphs.build import GraphParams, build_crystal_graph
from cgat_dgl.graphs.crystal_graph import CrystalGraph

MAX_NBR = 24


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


def cut_splits_a_shell(structure: Structure, max_nbr: int = MAX_NBR) -> bool:
    """Whether some atom's max_nbr-th and next neighbours are equally far, so that which of them
    makes the list is arbitrary (and may change when the sites are reordered)."""
    radius = 6.0
    while True:
        centers, _, _, distances = structure.get_neighbor_list(radius)
        if np.bincount(centers, minlength=len(structure)).min() > max_nbr:
            break
        radius *= 1.5
    order = np.lexsort((distances, centers))
    centers, distances = centers[order], distances[order]
    starts = np.searchsorted(centers, np.arange(len(structure)))
    return bool(np.any(distances[starts + max_nbr] - distances[starts + max_nbr - 1] <= 1e-6))


def graph_from_structure(record_id: str, structure: Structure, max_nbr: int = MAX_NBR) -> CrystalGraph:
    return build_crystal_graph(record_id, structure, GraphParams(max_nbr=max_nbr))


@lru_cache(maxsize=4)
def real_graphs(path: Path, count: int) -> tuple[tuple[CrystalGraph, float], ...]:
    """Graphs and formation energies of the first ``count`` structures of the shared file."""
    return tuple((graph_from_structure(rid, s), target) for rid, s, target in read_records(path, count))
