"""The DGL and plain PyTorch message-passing primitives agree, and both compute what they promise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cgat_dgl.graphs.batch import Batch
from cgat_dgl.graphs.collate import collate
from cgat_dgl.ops import make_graph_ops
from cgat_dgl.ops.base import GraphOps
from model_test_graphs import real_graphs

REPO_ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-10}


@pytest.fixture(scope="module")
def batch(shared_data_path: Path) -> Batch:
    # The first records hold one-element crystals (no composition edges) and up to 16 atoms.
    return collate(list(real_graphs(shared_data_path, 12)), backend="dgl")


def atom_ops(batch: Batch, backend: str) -> GraphOps:
    return make_graph_ops(
        backend, batch.edge_src, batch.edge_dst, batch.num_atoms, batch.atom_crystal,
        batch.num_crystals, graph=batch.atom_graph if backend == "dgl" else None,
    )  # fmt: skip


def comp_ops(batch: Batch, backend: str) -> GraphOps:
    return make_graph_ops(
        backend, batch.comp_src, batch.comp_dst, int(batch.comp_elements.shape[0]),
        batch.comp_crystal, batch.num_crystals,
    )  # fmt: skip


def _run(ops: GraphOps, name: str, values: torch.Tensor, weights: torch.Tensor):  # type: ignore[no-untyped-def]
    values = values.clone().requires_grad_(True)
    out = getattr(ops, name)(values)
    # A random linear functional makes every output element matter to the gradient.
    (out * weights).sum().backward()
    return out.detach(), values.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("graph", ["atoms", "composition"])
@pytest.mark.parametrize("name", ["edge_softmax", "aggregate", "segment_softmax", "segment_sum"])
def test_backends_agree_on_outputs_and_gradients(batch: Batch, graph: str, name: str, dtype: torch.dtype) -> None:
    make = atom_ops if graph == "atoms" else comp_ops
    dgl_ops, torch_ops = make(batch, "dgl"), make(batch, "torch")
    rows = dgl_ops.src.shape[0] if name in ("edge_softmax", "aggregate") else dgl_ops.num_nodes
    generator = torch.Generator().manual_seed(0)
    values = 3 * torch.randn(rows, 3, 5, generator=generator, dtype=dtype)
    out_rows = {"aggregate": dgl_ops.num_nodes, "segment_sum": dgl_ops.num_segments}.get(name, rows)
    weights = torch.randn(out_rows, 3, 5, generator=generator, dtype=dtype)

    out_dgl, grad_dgl = _run(dgl_ops, name, values, weights)
    out_torch, grad_torch = _run(torch_ops, name, values, weights)
    assert out_dgl.shape == out_torch.shape == (out_rows, 3, 5)
    assert out_dgl.dtype == out_torch.dtype == dtype
    torch.testing.assert_close(out_torch, out_dgl, rtol=0, atol=TOLERANCE[dtype])
    torch.testing.assert_close(grad_torch, grad_dgl, rtol=0, atol=TOLERANCE[dtype])


@pytest.mark.parametrize("backend", ["dgl", "torch"])
def test_primitives_match_their_definitions(batch: Batch, backend: str) -> None:
    ops = atom_ops(batch, backend)
    scores = torch.randn(ops.src.shape[0], 2, dtype=torch.float64)
    node_scores = torch.randn(ops.num_nodes, 2, dtype=torch.float64)
    softmax, aggregate = ops.edge_softmax(scores), ops.aggregate(scores)
    node_softmax, segment_sum = ops.segment_softmax(node_scores), ops.segment_sum(node_scores)
    for node in range(ops.num_nodes):
        incoming = ops.dst == node
        torch.testing.assert_close(softmax[incoming], torch.softmax(scores[incoming], dim=0))
        torch.testing.assert_close(aggregate[node], scores[incoming].sum(dim=0))
    for crystal in range(ops.num_segments):
        members = ops.segment == crystal
        torch.testing.assert_close(node_softmax[members], torch.softmax(node_scores[members], dim=0))
        torch.testing.assert_close(segment_sum[crystal], node_scores[members].sum(dim=0))


@pytest.mark.parametrize("backend", ["dgl", "torch"])
def test_softmax_is_stable_for_large_scores(batch: Batch, backend: str) -> None:
    ops = atom_ops(batch, backend)
    scores = torch.full((ops.src.shape[0], 4), 1e4)
    scores[::3] = -1e4
    out = ops.edge_softmax(scores)
    assert torch.isfinite(out).all()
    totals = ops.aggregate(out)
    has_incoming = torch.bincount(ops.dst, minlength=ops.num_nodes) > 0
    torch.testing.assert_close(totals[has_incoming], torch.ones_like(totals[has_incoming]))


@pytest.mark.parametrize("backend", ["dgl", "torch"])
def test_nodes_without_incoming_edges_receive_zero(backend: str) -> None:
    src, dst = torch.tensor([0, 0, 1]), torch.tensor([1, 2, 2])
    ops = make_graph_ops(backend, src, dst, 4, torch.tensor([0, 0, 0, 1]), 2)
    messages = torch.randn(3, 2)
    aggregate = ops.aggregate(ops.edge_softmax(messages) * messages)
    assert torch.equal(aggregate[[0, 3]], torch.zeros(2, 2))
    torch.testing.assert_close(aggregate[1], messages[0])


def test_unknown_backend_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown message-passing backend 'cuda'"):
        make_graph_ops("cuda", torch.tensor([0]), torch.tensor([0]), 1, torch.tensor([0]), 1)  # type: ignore[arg-type]


def test_dgl_backend_checks_the_prebuilt_graph_and_segment_order(batch: Batch) -> None:
    with pytest.raises(ValueError, match="prebuilt DGL graph"):
        make_graph_ops("dgl", batch.comp_src, batch.comp_dst, int(batch.comp_elements.shape[0]),
                       batch.comp_crystal, batch.num_crystals, graph=batch.atom_graph)  # fmt: skip
    with pytest.raises(ValueError, match="non-decreasing"):
        make_graph_ops("dgl", torch.tensor([0]), torch.tensor([1]), 2, torch.tensor([1, 0]), 2)


def test_torch_backend_runs_without_dgl() -> None:
    # DGL is made unimportable: the PyTorch backend and the model must not need it.
    code = (
        "import sys; sys.modules['dgl'] = None\n"
        "import torch\n"
        "from cgat_dgl.model import CGAT, ModelConfig\n"
        "from cgat_dgl.ops import make_graph_ops\n"
        "ops = make_graph_ops('torch', torch.tensor([0, 1]), torch.tensor([1, 0]), 2, torch.tensor([0, 0]), 1)\n"
        "print(ops.edge_softmax(torch.ones(2, 3)).sum().item())\n"
        "CGAT(ModelConfig.preset('smoke', backend='torch'))\n"
        "try:\n"
        "    make_graph_ops('dgl', torch.tensor([0]), torch.tensor([0]), 1, torch.tensor([0]), 1)\n"
        "except ImportError:\n"
        "    print('dgl unavailable')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["6.0", "dgl", "unavailable"]
