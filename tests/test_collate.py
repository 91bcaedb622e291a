"""Batching crystal graphs: offsets, batched DGL graphs, targets and a reproducible loader."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import dgl
import numpy as np
import pytest
import torch

from cgat_dgl.graphs.collate import collate, make_loader
from cgat_dgl.graphs.crystal_graph import CrystalGraph
from model_test_graphs import real_graphs

REPO_ROOT = Path(__file__).resolve().parents[1]
Items = list[tuple[CrystalGraph, float]]


@pytest.fixture(scope="module")
def items(shared_data_path: Path) -> Items:
    return list(real_graphs(shared_data_path, 24))


def test_concatenation_with_offsets_recovers_every_crystal(items: Items) -> None:
    batch = collate(items, backend="torch")
    assert batch.ids == [g.id for g, _ in items]
    assert batch.atom_graph is None and batch.comp_graph is None
    atom_start = element_start = edge_start = comp_edge_start = 0
    for index, (graph, _) in enumerate(items):
        n, m, e, ec = graph.num_atoms, len(graph.comp_elements), graph.num_edges, len(graph.comp_src)
        assert batch.atoms_per_crystal[index] == n and batch.elements_per_crystal[index] == m
        assert np.array_equal(batch.atomic_numbers[atom_start : atom_start + n], graph.atomic_numbers)
        assert torch.all(batch.atom_crystal[atom_start : atom_start + n] == index)
        assert np.array_equal(batch.edge_src[edge_start : edge_start + e] - atom_start, graph.edge_src)
        assert np.array_equal(batch.edge_dst[edge_start : edge_start + e] - atom_start, graph.edge_dst)
        assert np.array_equal(batch.edge_rank[edge_start : edge_start + e], graph.edge_rank)
        assert np.array_equal(batch.comp_elements[element_start : element_start + m], graph.comp_elements)
        assert np.allclose(batch.comp_fractions[element_start : element_start + m], graph.comp_fractions)
        assert torch.all(batch.comp_crystal[element_start : element_start + m] == index)
        comp = slice(comp_edge_start, comp_edge_start + ec)
        assert np.array_equal(batch.comp_src[comp] - element_start, graph.comp_src)
        assert np.array_equal(batch.comp_dst[comp] - element_start, graph.comp_dst)
        atom_start, element_start, edge_start, comp_edge_start = (
            atom_start + n, element_start + m, edge_start + e, comp_edge_start + ec
        )  # fmt: skip
    assert atom_start == batch.num_atoms and edge_start == batch.edge_src.shape[0]
    for name in ("atomic_numbers", "edge_src", "edge_dst", "edge_rank", "atom_crystal", "comp_src", "comp_crystal"):
        assert getattr(batch, name).dtype == torch.int64, name


def test_targets_are_raw_float32(items: Items) -> None:
    batch = collate(items, backend="torch")
    assert batch.targets is not None and batch.targets.dtype == torch.float32
    assert np.allclose(batch.targets.numpy(), [t for _, t in items], atol=1e-6)


def test_dgl_graphs_equal_dgl_batch_of_the_crystals(items: Items) -> None:
    batch = collate(items, backend="dgl")
    expected_atoms = dgl.batch(
        [dgl.graph((g.edge_src.astype(np.int64), g.edge_dst.astype(np.int64)), num_nodes=g.num_atoms) for g, _ in items]
    )
    expected_comp = dgl.batch(
        [dgl.graph((g.comp_src.astype(np.int64), g.comp_dst.astype(np.int64)), num_nodes=len(g.comp_elements))
         for g, _ in items]
    )  # fmt: skip
    for built, expected in ((batch.atom_graph, expected_atoms), (batch.comp_graph, expected_comp)):
        assert built.batch_size == expected.batch_size == len(items)
        assert torch.equal(built.batch_num_nodes(), expected.batch_num_nodes())
        assert torch.equal(built.batch_num_edges(), expected.batch_num_edges())
        for mine, theirs in zip(built.edges(order="eid"), expected.edges(order="eid")):
            assert torch.equal(mine, theirs)
    # Unbatching gives back each crystal's own graph.
    first = dgl.unbatch(batch.atom_graph)[3]
    assert torch.equal(first.edges()[0], torch.from_numpy(items[3][0].edge_src.astype(np.int64)))


def test_empty_batch_and_unknown_backend_are_rejected(items: Items) -> None:
    with pytest.raises(ValueError, match="empty"):
        collate([])
    with pytest.raises(ValueError, match="unknown backend"):
        collate(items[:2], backend="jax")  # type: ignore[arg-type]


def _order(loader) -> list[str]:  # type: ignore[no-untyped-def]
    return [crystal_id for batch in loader for crystal_id in batch.ids]


def test_seeded_shuffling_is_reproducible(items: Items) -> None:
    first = _order(make_loader(items, 5, shuffle=True, backend="torch", seed=3))
    again = _order(make_loader(items, 5, shuffle=True, backend="torch", seed=3))
    other = _order(make_loader(items, 5, shuffle=True, backend="torch", seed=4))
    assert first == again
    assert first != other
    assert sorted(first) == sorted(g.id for g, _ in items)
    assert _order(make_loader(items, 5, shuffle=False, backend="torch")) == [g.id for g, _ in items]


def test_loader_batch_sizes_drop_last_and_workers(items: Items) -> None:
    sizes = [b.num_crystals for b in make_loader(items, 10, shuffle=False, backend="torch")]
    assert sizes == [10, 10, 4]
    dropped = [b.num_crystals for b in make_loader(items, 10, shuffle=False, backend="torch", drop_last=True)]
    assert dropped == [10, 10]


def test_worker_loader_gives_dgl_graphs_that_dgl_kernels_can_use(shared_data_path: Path) -> None:
    # DGL graphs made in a worker process crash DGL's kernels in the main process; the loader
    # builds them in the main process. Run in a subprocess, so that a regression fails this test
    # instead of killing the test session.
    code = (
        "import sys, torch, dgl\n"
        "sys.path.insert(0, 'tests')\n"
        "from pathlib import Path\n"
        "from model_test_graphs import real_graphs\n"
        "from cgat_dgl.graphs.collate import make_loader\n"
        f"items = list(real_graphs(Path({str(shared_data_path)!r}), 12))\n"
        "loader = make_loader(items, 4, shuffle=True, backend='dgl', seed=1, num_workers=1)\n"
        "for epoch in range(2):\n"
        "    for batch in loader:\n"
        "        degree = dgl.ops.copy_e_sum(batch.atom_graph, torch.ones(batch.edge_src.shape[0], 1))\n"
        "        assert torch.equal(degree[:, 0], torch.bincount(batch.edge_dst, minlength=batch.num_atoms).float())\n"
        "        assert batch.comp_graph.batch_size == batch.num_crystals\n"
        "print('ok', len(loader), loader.generator is not None)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["ok", "3", "True"]
