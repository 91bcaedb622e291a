"""Batching crystal graphs: concatenation with index offsets, plus batched DGL graphs for DGL.

The batch's DGL graphs are built in one call from the concatenated edge lists, with the per-crystal
node and edge counts set on them: the same object ``dgl.batch`` returns for the per-crystal
graphs (the tests check this), in about a tenth of the time of building one graph per crystal
and batching them (0.6 ms against 5 ms for 64 crystals), so no per-crystal graphs are cached.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from cgat_dgl.graphs.batch import Batch
from cgat_dgl.graphs.crystal_graph import CrystalGraph

Backend = Literal["dgl", "torch"]


def _counts(values: Sequence[np.ndarray]) -> np.ndarray:
    return np.fromiter((len(v) for v in values), dtype=np.int64, count=len(values))


def _concat_offset(parts: Sequence[np.ndarray], counts: np.ndarray, offsets: np.ndarray) -> torch.Tensor:
    """Concatenate per-crystal local indices and shift each crystal's block by its node offset."""
    joined = np.concatenate(parts).astype(np.int64, copy=False)
    joined += np.repeat(offsets, counts)
    return torch.from_numpy(joined)


def _concat(parts: Sequence[np.ndarray], dtype: Any) -> torch.Tensor:
    return torch.from_numpy(np.concatenate(parts).astype(dtype, copy=False))


def _exclusive_cumsum(counts: np.ndarray) -> np.ndarray:
    offsets = np.zeros_like(counts)
    np.cumsum(counts[:-1], out=offsets[1:])
    return offsets


def _batched_dgl_graph(
    src: torch.Tensor, dst: torch.Tensor, node_crystal: torch.Tensor, nodes_per_crystal: torch.Tensor
) -> Any:
    """The ``dgl.batch`` of the per-crystal graphs, built from the already concatenated edges."""
    import dgl

    graph = dgl.graph((src, dst), num_nodes=int(node_crystal.shape[0]))
    graph.set_batch_num_nodes(nodes_per_crystal)
    edge_crystal = node_crystal.index_select(0, src)
    graph.set_batch_num_edges(torch.bincount(edge_crystal, minlength=int(nodes_per_crystal.shape[0])))
    return graph


def attach_dgl_graphs(batch: Batch) -> Batch:
    """Set ``atom_graph`` and ``comp_graph``: the batched DGL graphs of the batch's edges."""
    batch.atom_graph = _batched_dgl_graph(
        batch.edge_src, batch.edge_dst, batch.atom_crystal, batch.atoms_per_crystal
    )
    batch.comp_graph = _batched_dgl_graph(
        batch.comp_src, batch.comp_dst, batch.comp_crystal, batch.elements_per_crystal
    )
    return batch


def collate(items: Sequence[tuple[CrystalGraph, float] | tuple[CrystalGraph, float, int]], backend: Backend = "dgl") -> Batch:
    """One ``Batch`` from (graph, raw target) pairs, or (graph, raw target, fidelity) triples of a
    multi-fidelity dataset; indices are made global to the batch."""
    if len(items) == 0:
        raise ValueError("cannot collate an empty list of crystal graphs")
    if backend not in ("dgl", "torch"):
        raise ValueError(f"unknown backend {backend!r}; expected 'dgl' or 'torch'")
    widths = {len(item) for item in items}
    if len(widths) != 1 or not widths <= {2, 3}:
        raise ValueError(f"items must all be (graph, target) or all (graph, target, fidelity); got lengths {sorted(widths)}")
    graphs = [item[0] for item in items]
    num_crystals = len(graphs)

    atoms = _counts([g.atomic_numbers for g in graphs])
    edges = _counts([g.edge_src for g in graphs])
    elements = _counts([g.comp_elements for g in graphs])
    comp_edges = _counts([g.comp_src for g in graphs])
    atom_offsets = _exclusive_cumsum(atoms)
    element_offsets = _exclusive_cumsum(elements)
    crystal_index = np.arange(num_crystals, dtype=np.int64)

    batch = Batch(
        ids=[g.id for g in graphs],
        atomic_numbers=_concat([g.atomic_numbers for g in graphs], np.int64),
        edge_src=_concat_offset([g.edge_src for g in graphs], edges, atom_offsets),
        edge_dst=_concat_offset([g.edge_dst for g in graphs], edges, atom_offsets),
        edge_rank=_concat([g.edge_rank for g in graphs], np.int64),
        atom_crystal=torch.from_numpy(np.repeat(crystal_index, atoms)),
        atoms_per_crystal=torch.from_numpy(atoms),
        comp_elements=_concat([g.comp_elements for g in graphs], np.int64),
        comp_fractions=_concat([g.comp_fractions for g in graphs], np.float32),
        comp_src=_concat_offset([g.comp_src for g in graphs], comp_edges, element_offsets),
        comp_dst=_concat_offset([g.comp_dst for g in graphs], comp_edges, element_offsets),
        comp_crystal=torch.from_numpy(np.repeat(crystal_index, elements)),
        elements_per_crystal=torch.from_numpy(elements),
        targets=torch.tensor([float(item[1]) for item in items], dtype=torch.float32),
        fidelity=torch.tensor([int(item[2]) for item in items], dtype=torch.long) if widths == {3} else None,
    )
    return attach_dgl_graphs(batch) if backend == "dgl" else batch


class _MainProcessGraphLoader(DataLoader):
    """A loader whose workers collate plain tensors and whose DGL graphs are built in the main
    process: DGL graphs made in a worker process crash DGL's kernels (a segfault with DGL 2.1
    on CPU) once they are used in the main process."""

    def __iter__(self) -> Iterator[Batch]:  # type: ignore[override]
        for batch in super().__iter__():
            yield attach_dgl_graphs(batch)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    backend: Backend = "dgl",
    seed: int = 0,
    num_workers: int = 0,
    drop_last: bool = False,
    sampler: Sampler | None = None,
) -> DataLoader:
    """A DataLoader of ``Batch``es over a dataset of (CrystalGraph, target) items.

    Shuffling draws from its own generator seeded with ``seed``, so the order of batches is the
    same on every run and independent of other random draws. A ``sampler`` (e.g. a data-parallel
    rank's ``DistributedSampler``, which shuffles by its own seed) replaces that shuffle.
    """
    if sampler is not None and shuffle:
        raise ValueError("give either shuffle=True or a sampler: the sampler decides the order")
    generator = torch.Generator().manual_seed(seed)
    in_workers = num_workers > 0 and backend == "dgl"
    loader_class = _MainProcessGraphLoader if in_workers else DataLoader
    return loader_class(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        sampler=sampler,
        collate_fn=functools.partial(collate, backend="torch" if in_workers else backend),
        generator=generator,
        num_workers=num_workers,
        drop_last=drop_last,
        persistent_workers=num_workers > 0,
    )
