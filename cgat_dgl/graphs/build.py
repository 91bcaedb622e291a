"""Building crystal graphs from records: one structure, many in parallel, and through the cache."""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing.context import BaseContext
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from pymatgen.core import Structure
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from cgat_dgl import progress as progress_output
from cgat_dgl.data.records import DataError, MaterialRecord
from cgat_dgl.data.validation import check_structure, where
from cgat_dgl.graphs.cache import CachedFailure, GraphCache
from cgat_dgl.graphs.composition import composition_graph
from cgat_dgl.graphs.crystal_graph import CrystalGraph
from cgat_dgl.graphs.neighbors import GraphParams, nearest_neighbor_table

# Below this many structures, starting worker processes costs more than it saves.
MIN_PARALLEL = 256
CHUNK_SIZE = 64
# Large builds write a pack every this many structures, so an interrupted build keeps its work.
FLUSH_EVERY = 10_000
PROGRESS_MIN = 200
# Reason given to a structure whose neighbour search cannot succeed (e.g. not periodic).
NO_NEIGHBORS = "no_neighbors"

_Outcome = tuple[int, CrystalGraph | tuple[str, str]]  # record index, graph or (reason, detail)


def build_crystal_graph(record_id: str, structure: Structure, params: GraphParams) -> CrystalGraph:
    """The atom graph (nearest neighbours with shell ranks) and composition graph of a structure."""
    table = nearest_neighbor_table(
        structure,
        max_nbr=params.max_nbr,
        tol=params.rank_tol,
        initial_radius=params.initial_radius,
        growth=params.radius_growth,
    )
    atomic_numbers = np.fromiter((site.specie.Z for site in structure), dtype=np.int16, count=len(structure))
    composition = composition_graph(atomic_numbers)
    return CrystalGraph(
        id=record_id,
        atomic_numbers=atomic_numbers,
        edge_src=table.src,
        edge_dst=table.dst,
        edge_rank=table.rank,
        comp_elements=composition.elements,
        comp_fractions=composition.fractions,
        comp_src=composition.src,
        comp_dst=composition.dst,
    )


def build_record_graph(record: MaterialRecord, params: GraphParams) -> CrystalGraph:
    """Check and parse a record's structure and build its graph; bad structures raise DataError."""
    structure = check_structure(record)
    try:
        return build_crystal_graph(record.id, structure, params)
    except ValueError as error:
        raise DataError(NO_NEIGHBORS, where(record), str(error)) from error


def _build_chunk(task: tuple[list[tuple[int, MaterialRecord]], GraphParams]) -> list[_Outcome]:
    chunk, params = task
    outcomes: list[_Outcome] = []
    for index, record in chunk:
        try:
            outcomes.append((index, build_record_graph(record, params)))
        except DataError as error:
            # Sent back as plain data: DataError's constructor does not survive pickling.
            outcomes.append((index, (error.reason, error.detail)))
    return outcomes


def build_graphs(
    records: Sequence[MaterialRecord],
    params: GraphParams = GraphParams(),
    workers: int | None = None,
    progress: bool = False,
) -> Iterator[tuple[int, CrystalGraph | DataError]]:
    """Build the graphs of ``records``; yields (index in records, graph or DataError) in any order."""
    workers = (os.cpu_count() or 1) if workers is None else max(1, workers)
    chunks = [
        ([(i, records[i]) for i in range(start, min(start + CHUNK_SIZE, len(records)))], params)
        for start in range(0, len(records), CHUNK_SIZE)
    ]
    bar = progress_output.bar(
        total=len(records),
        desc="building graphs",
        unit="structure",
        enabled=progress and len(records) >= PROGRESS_MIN,
    )
    try:
        if workers == 1 or len(records) < MIN_PARALLEL:
            with threadpool_limits(limits=1, user_api="blas"):
                yield from _unpack(map(_build_chunk, chunks), records, bar)
        else:
            pool = ProcessPoolExecutor(
                max_workers=min(workers, len(chunks)), mp_context=_worker_context(), initializer=_init_worker
            )
            try:
                futures = [pool.submit(_build_chunk, chunk) for chunk in chunks]
                yield from _unpack((future.result() for future in as_completed(futures)), records, bar)
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
    finally:
        bar.close()


def _init_worker() -> None:
    # The CIF parser inverts many 3x3 matrices; multi-threaded BLAS makes each several times slower.
    threadpool_limits(limits=1, user_api="blas")


def _worker_context() -> BaseContext:
    # On Linux, forked workers start at once and need no ``if __name__ == "__main__"`` guard in the
    # calling script; they run only pymatgen and numpy, never torch, so the parent's threads are
    # harmless. Elsewhere fork is unsafe or missing, and spawn is used.
    if sys.platform.startswith("linux"):
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def _unpack(
    results: Iterator[list[_Outcome]], records: Sequence[MaterialRecord], bar: tqdm
) -> Iterator[tuple[int, CrystalGraph | DataError]]:
    for outcomes in results:
        for index, outcome in outcomes:
            if isinstance(outcome, CrystalGraph):
                yield index, outcome
            else:
                reason, detail = outcome
                yield index, DataError(reason, where(records[index]), detail)
        bar.update(len(outcomes))


@dataclass
class GraphSet:
    """The graphs of a list of records and the structures that could not be used."""

    graphs: dict[str, CrystalGraph] = field(default_factory=dict)  # by record id, in record order
    errors: list[tuple[int, DataError]] = field(default_factory=list)  # (record index, error), in order
    built: int = 0  # structures built by this call (graphs and failures)
    cached: int = 0  # structures found in the cache (graphs and failures)
    seconds: float = 0.0


def graphs_for_records(
    records: Sequence[MaterialRecord],
    params: GraphParams = GraphParams(),
    cache_dir: Path | str | None = None,
    workers: int | None = None,
    progress: bool = False,
) -> GraphSet:
    """Load what the cache holds, build and cache the rest (each distinct structure once)."""
    start = time.perf_counter()
    keys = [record.fingerprint() for record in records]
    cache = GraphCache(cache_dir, params) if cache_dir is not None else None
    first_of_key: dict[str, int] = {}
    for index, key in enumerate(keys):
        if key not in first_of_key and (cache is None or not cache.has(key)):
            first_of_key[key] = index
    todo = [records[i] for i in first_of_key.values()]
    todo_keys = list(first_of_key)

    built: dict[str, CrystalGraph] = {}
    failed: dict[str, CachedFailure] = {}
    pending_graphs: dict[str, CrystalGraph] = {}
    pending_failures: dict[str, CachedFailure] = {}
    for position, outcome in build_graphs(todo, params, workers, progress):
        key = todo_keys[position]
        if isinstance(outcome, DataError):
            failed[key] = pending_failures[key] = CachedFailure(outcome.reason, outcome.detail)
        elif cache is None:
            built[key] = outcome
        else:
            pending_graphs[key] = outcome
        if cache is not None and len(pending_graphs) + len(pending_failures) >= FLUSH_EVERY:
            cache.add(pending_graphs, pending_failures)
            pending_graphs, pending_failures = {}, {}
    if cache is not None:
        cache.add(pending_graphs, pending_failures)

    result = GraphSet(built=len(todo), cached=len(set(keys)) - len(todo))
    for index, (record, key) in enumerate(zip(records, keys)):
        failure = failed.get(key) or (cache.failure(key) if cache is not None else None)
        if failure is not None:
            result.errors.append((index, DataError(failure.reason, where(record), failure.detail)))
            continue
        graph = built.get(key) if cache is None else cache.graph(key, record.id)
        if graph is None:
            raise RuntimeError(f"{where(record)}: graph missing after the build")
        result.graphs[record.id] = graph if graph.id == record.id else replace(graph, id=record.id)
    result.seconds = time.perf_counter() - start
    return result
