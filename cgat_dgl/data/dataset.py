"""Loading a data file into crystal graphs and a table of targets, and per-property datasets."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
from pymatgen.core import Composition, Element

from cgat_dgl.data.hull import energy_above_hull
from cgat_dgl.data.readers import load_records
from cgat_dgl.data.records import LoadReport, MaterialRecord
from cgat_dgl.graphs.build import graphs_for_records
from cgat_dgl.graphs.crystal_graph import CrystalGraph
from cgat_dgl.graphs.neighbors import GraphParams

HULL_SOURCE = "e_form_pbe"


def hull_column(e_form_column: str) -> str:
    """The name of the energy above the hull derived from a formation-energy column."""
    return e_form_column.replace("e_form", "e_above_hull", 1)


class GraphDataset(torch.utils.data.Dataset):
    """Crystal graphs with one target each, in a fixed order."""

    def __init__(self, ids: Sequence[str], graphs: Sequence[CrystalGraph], targets: np.ndarray) -> None:
        if not len(ids) == len(graphs) == len(targets):
            raise ValueError(f"{len(ids)} ids, {len(graphs)} graphs and {len(targets)} targets")
        self.ids: list[str] = list(ids)
        self.graphs: list[CrystalGraph] = list(graphs)
        self.targets: np.ndarray = np.asarray(targets, dtype=np.float32)
        self._position = {graph_id: i for i, graph_id in enumerate(self.ids)}

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[CrystalGraph, float]:
        return self.graphs[index], float(self.targets[index])

    def subset(self, ids: Sequence[str]) -> "GraphDataset":
        """The given ids, in the given order."""
        missing = [graph_id for graph_id in ids if graph_id not in self._position]
        if missing:
            raise KeyError(f"{len(missing)} ids not in the dataset, e.g. {missing[:3]}")
        positions = [self._position[graph_id] for graph_id in ids]
        return GraphDataset(
            [self.ids[i] for i in positions], [self.graphs[i] for i in positions], self.targets[positions]
        )


@dataclass
class LoadStats:
    """Where the time of a load went, and how many structures were built or found in the cache."""

    built: int = 0
    cached: int = 0
    read_s: float = 0.0
    graphs_s: float = 0.0
    hull_s: float = 0.0


@dataclass
class LoadedData:
    graphs: dict[str, CrystalGraph]
    targets: pd.DataFrame  # index id, one float column per property, NaN where absent
    report: LoadReport
    stats: LoadStats = field(default_factory=LoadStats)

    def dataset(self, prop: str, ids: Sequence[str] | None = None) -> GraphDataset:
        """The materials (all, or those of ``ids`` in that order) that have a value of ``prop``."""
        if prop not in self.targets.columns:
            raise KeyError(f"no property {prop!r} in {self.report.path}; have {list(self.targets.columns)}")
        column = self.targets[prop]
        if ids is None:
            chosen = column.index[column.notna()].tolist()
        else:
            unknown = [graph_id for graph_id in ids if graph_id not in self.graphs]
            if unknown:
                raise KeyError(f"{len(unknown)} ids not loaded from {self.report.path}, e.g. {unknown[:3]}")
            values = column.reindex(list(ids))
            chosen = values.index[values.notna()].tolist()
        targets = column.loc[chosen].to_numpy(dtype=np.float32)
        return GraphDataset(chosen, [self.graphs[graph_id] for graph_id in chosen], targets)


def graph_composition(graph: CrystalGraph) -> Composition:
    """The cell composition, with exact integer amounts (the stored fractions are float32)."""
    elements, counts = np.unique(graph.atomic_numbers, return_counts=True)
    return Composition({Element.from_Z(int(z)): int(n) for z, n in zip(elements, counts)})


def _target_table(records: Sequence[MaterialRecord], properties: Sequence[str] | None) -> pd.DataFrame:
    if properties is None:
        names: dict[str, None] = {}
        for record in records:
            names.update(dict.fromkeys(record.targets))
        properties = list(names)
    values = np.full((len(records), len(properties)), np.nan)
    for row, record in enumerate(records):
        for col, name in enumerate(properties):
            value = record.targets.get(name)
            if value is not None:
                values[row, col] = value
    index = pd.Index([record.id for record in records], name="id")
    return pd.DataFrame(values, index=index, columns=list(properties))


def load_dataset(
    path: Path | str,
    properties: Sequence[str] | None = None,
    *,
    params: GraphParams = GraphParams(),
    cache_dir: Path | str | None = Path("cache"),
    workers: int | None = None,
    on_error: Literal["raise", "skip"] = "skip",
    derive_e_above_hull: bool = False,
    progress: bool = True,
) -> LoadedData:
    """Read a data file, build (or load from the cache) the graphs, and tabulate the targets.

    Bad records are dropped and counted by reason in the report (``on_error="skip"``) or raise their
    DataError (``"raise"``), structure problems included. With ``derive_e_above_hull`` a column
    ``e_above_hull_pbe`` is added, relative to the hull of the loaded materials' ``e_form_pbe``.
    ``cache_dir=None`` builds the graphs without caching them.
    """
    wanted = None if properties is None else list(dict.fromkeys(properties))
    read_properties = wanted
    if derive_e_above_hull and wanted is not None and HULL_SOURCE not in wanted:
        read_properties = [*wanted, HULL_SOURCE]
    stats = LoadStats()
    start = time.perf_counter()
    records, report = load_records(path, read_properties, on_error=on_error)
    stats.read_s = time.perf_counter() - start
    built = graphs_for_records(records, params, cache_dir=cache_dir, workers=workers, progress=progress)
    stats.graphs_s, stats.built, stats.cached = built.seconds, built.built, built.cached
    if built.errors and on_error == "raise":
        raise built.errors[0][1]
    for _, error in built.errors:
        report.drop(error)
    kept = [record for record in records if record.id in built.graphs]
    targets = _target_table(kept, read_properties)

    if derive_e_above_hull:
        if HULL_SOURCE not in targets.columns:
            raise ValueError(f"{path}: deriving the energy above the hull needs {HULL_SOURCE!r} values")
        start = time.perf_counter()
        compositions = [graph_composition(built.graphs[graph_id]) for graph_id in targets.index]
        targets[hull_column(HULL_SOURCE)] = energy_above_hull(compositions, targets[HULL_SOURCE].to_numpy())
        if wanted is not None and HULL_SOURCE not in wanted:
            targets = targets.drop(columns=HULL_SOURCE)
        stats.hull_s = time.perf_counter() - start

    report.kept = len(kept)
    report.per_property = Counter({name: int(targets[name].notna().sum()) for name in targets.columns})
    graphs = {graph_id: built.graphs[graph_id] for graph_id in targets.index}
    return LoadedData(graphs=graphs, targets=targets, report=report, stats=stats)
