"""The CPU kernels against the torch operations they replace, and the model with and without them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cgat_dgl.graphs.collate import collate
from cgat_dgl.model import CGAT, ModelConfig
from cgat_dgl.model.edge_networks import EdgeNetworks
from cgat_dgl.model.layers import MLP
from cgat_dgl import kernels
from cgat_dgl.model.fast import cpu_kernels
from cgat_dgl.model.fast.edge_features import EdgeFeatures, EdgeSet
from cgat_dgl.model.fast.networks import evaluate_networks
from cgat_dgl.ops import make_graph_ops
from model_test_graphs import real_graphs


@pytest.fixture
def kernels_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(kernels.ENABLE_ENV, "0")


def test_kernels_build_here() -> None:
    # The project's set-up installs what they need (ninja; a C++ compiler is on the machines).
    assert kernels.available()


def block_edges(senders: int, block: int, receivers: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    src = torch.arange(senders).repeat_interleave(block)
    return src, torch.randint(0, receivers, (senders * block,), generator=generator)


def networks_and_grads(
    networks: list[EdgeNetworks], edges: EdgeSet, grad: torch.Tensor, inputs: list[torch.Tensor],
    receiver_order: cpu_kernels.ReceiverIndex | None = None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:  # fmt: skip
    params = inputs + [p for n in networks for p in n.parameters()]
    for p in params:
        p.grad = None
    out = torch.cat(evaluate_networks(networks, edges, receiver_order))
    out.backward(grad)
    return out.detach(), [p.grad.clone() for p in params]  # type: ignore[union-attr]


@pytest.mark.parametrize("in_receiver_order", [False, True])
@pytest.mark.parametrize("edge_term", ["per_edge", "table"])
@pytest.mark.parametrize(("atoms", "block", "features", "hidden"), [(7, 3, 5, 4), (600, 24, 32, 32), (53, 24, 16, 48)])
def test_tiled_networks_equal_the_torch_operations(
    monkeypatch: pytest.MonkeyPatch, edge_term: str, atoms: int, block: int, features: int, hidden: int,
    in_receiver_order: bool,
) -> None:  # fmt: skip
    """Outputs and every gradient, in float32, for tile counts from one to many (the last one partial),
    with the first network's outputs in edge order or in receiver order."""
    torch.manual_seed(atoms)
    networks = [EdgeNetworks(features, heads=3, hidden=hidden), EdgeNetworks(features, heads=3, hidden=hidden)]
    src, dst = block_edges(atoms, block, atoms, seed=atoms)
    h = torch.randn(atoms, features, requires_grad=True)
    rows = torch.randint(0, 9, (src.numel(),))
    if edge_term == "per_edge":
        values = torch.randn(src.numel(), features, requires_grad=True)
        e = EdgeFeatures(rows, per_edge=values)
    else:
        values = torch.randn(9, features, requires_grad=True)
        e = EdgeFeatures(rows, table=values)
    edges = EdgeSet(h, receiver=dst, sender=src, e=e, sender_block=block)
    grad = torch.randn(12, src.numel(), features)

    calls = []
    original = cpu_kernels.tiled_edge_networks
    monkeypatch.setattr(cpu_kernels, "tiled_edge_networks", lambda *a, **k: calls.append(1) or original(*a, **k))
    order = cpu_kernels.ReceiverIndex.of(dst, atoms) if in_receiver_order else None
    tiled, tiled_grads = networks_and_grads(networks, edges, grad, [h, values], order)
    assert calls, "the tiled kernel did not run"
    monkeypatch.setenv(kernels.ENABLE_ENV, "0")
    expected, expected_grads = networks_and_grads(networks, edges, grad, [h, values], order)
    assert len(calls) == 1
    if order is not None:  # the torch operations' receiver order is a gather of their edge order
        unordered, _ = networks_and_grads(networks, edges, grad, [h, values])
        heads = 3
        torch.testing.assert_close(expected[: 2 * heads], unordered[: 2 * heads].index_select(1, order.order))

    torch.testing.assert_close(tiled, expected, rtol=1e-5, atol=1e-5)
    for got, want in zip(tiled_grads, expected_grads):
        scale = max(1.0, float(want.abs().max()))
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * scale)


def test_parts_without_a_gradient_count_as_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(3)
    networks = [EdgeNetworks(8, heads=2, hidden=8), EdgeNetworks(8, heads=2, hidden=8)]
    src, dst = block_edges(40, 24, 40, seed=3)
    h = torch.randn(40, 8, requires_grad=True)
    edges = EdgeSet(h, receiver=dst, sender=src, e=EdgeFeatures(src, per_edge=torch.randn(960, 8)), sender_block=24)

    def grads() -> list[torch.Tensor]:
        for p in [h, *(p for n in networks for p in n.parameters())]:
            p.grad = None
        parts = evaluate_networks(networks, edges)
        (parts[1].square().sum() + parts[2].sum()).backward()  # parts 0 and 3 unused
        return [h.grad.clone()] + [p.grad.clone() for n in networks for p in n.parameters()]  # type: ignore[union-attr]

    tiled = grads()
    monkeypatch.setenv(kernels.ENABLE_ENV, "0")
    for got, want in zip(tiled, grads()):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * max(1.0, float(want.abs().max())))


@pytest.mark.parametrize("backend", ["dgl", "torch"])
@pytest.mark.parametrize("spread", [1.0, 60.0])
@pytest.mark.parametrize("layout", ["per edge", "per kind", "receiver order"])
@pytest.mark.parametrize("features", [16, 5])
def test_attention_aggregate_equals_edge_softmax_and_aggregate(
    backend: str, spread: float, layout: str, features: int
) -> None:
    """Against both backends' primitives, with atoms that receive nothing, score gaps beyond exp's
    float32 range (spread 60: differences of several hundred), rows shared by edges (kinds), rows
    stored in receiver order, and widths of whole vectors (16) and not (5: the per-float loop)."""
    per_kind = layout == "per kind"
    generator = torch.Generator().manual_seed(int(spread) + per_kind)
    atoms, edges, heads = 50, 700, 3
    dst = torch.randint(0, atoms - 5, (edges,), generator=generator)  # the last five receive nothing
    src = torch.randint(0, atoms, (edges,), generator=generator)
    ops = make_graph_ops(backend, src, dst, atoms, torch.zeros(atoms, dtype=torch.long), 1)
    members = 90 if per_kind else edges
    rows = torch.randint(0, members, (edges,), generator=generator) if per_kind else None
    scores = (spread * torch.randn(heads, members, features, generator=generator)).requires_grad_()
    messages = torch.randn(heads, members, features, generator=generator, requires_grad=True)
    grad = torch.randn(atoms, features, generator=generator)

    receivers = cpu_kernels.ReceiverIndex.of(dst, atoms)
    if layout == "receiver order":
        stored = [t.detach().index_select(1, receivers.order).requires_grad_() for t in (scores, messages)]
        aggregate = cpu_kernels.attention_aggregate(*stored, receivers, in_receiver_order=True)
        aggregate.backward(grad)
        for t, ordered in zip((scores, messages), stored):  # back to edge order
            t.grad = ordered.grad.index_select(1, receivers.positions)  # type: ignore[union-attr]
    else:
        aggregate = cpu_kernels.attention_aggregate(scores, messages, receivers, rows)
        aggregate.backward(grad)
    got = [aggregate.detach(), scores.grad.clone(), messages.grad.clone()]  # type: ignore[union-attr]
    scores.grad = messages.grad = None
    s, m = (t if rows is None else t.index_select(1, rows) for t in (scores, messages))
    s, m = s.transpose(0, 1).contiguous(), m.transpose(0, 1).contiguous()
    expected = ops.aggregate((ops.edge_softmax(s) * m).mean(dim=1))
    expected.backward(grad)
    want = [expected.detach(), scores.grad, messages.grad]
    assert torch.count_nonzero(got[0][-5:]) == 0
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * max(1.0, float(b.abs().max())))


@pytest.mark.parametrize(("atoms", "features", "hidden"), [(1, 3, 2), (1600, 32, 32), (37, 8, 24)])
def test_generated_product_equals_the_outer_product_form(atoms: int, features: int, hidden: int) -> None:
    generator = torch.Generator().manual_seed(atoms)
    x = torch.randn(atoms, features, generator=generator, requires_grad=True)
    z = torch.randn(atoms, hidden, generator=generator, requires_grad=True)
    weight = torch.randn(features * hidden, features, generator=generator, requires_grad=True)
    grad = torch.randn(atoms, features, generator=generator)
    got = cpu_kernels.generated_product(x, z, weight)
    got.backward(grad)
    got_grads = [t.grad.clone() for t in (x, z, weight)]  # type: ignore[union-attr]
    x.grad = z.grad = weight.grad = None
    want = (x.unsqueeze(2) * z.unsqueeze(1)).view(atoms, -1) @ weight
    want.backward(grad)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))
    for a, t in zip(got_grads, (x, z, weight)):
        torch.testing.assert_close(a, t.grad, rtol=1e-5, atol=1e-5 * float(t.grad.abs().max()))  # type: ignore[union-attr]


@pytest.mark.parametrize(("heads", "edges", "features", "spread"), [(2, 1000, 32, 1.0), (3, 7, 5, 60.0), (1, 300, 16, 1.0)])
def test_head_attention_fcnn_equals_the_torch_operations(heads: int, edges: int, features: int, spread: float) -> None:
    """Eq. 2b-2d without the residual, against softmax over heads, weighted sum and the MLP, with
    score gaps beyond exp's float32 range (spread 60) and tile counts from one to several."""
    generator = torch.Generator().manual_seed(edges)
    torch.manual_seed(edges)
    scores = (spread * torch.randn(heads, edges, features, generator=generator)).requires_grad_()
    messages = torch.randn(heads, edges, features, generator=generator, requires_grad=True)
    fcnn = MLP(features, features, features)
    grad = torch.randn(edges, features, generator=generator)
    leaves = [scores, messages, *fcnn.parameters()]

    def outputs_and_grads(out: torch.Tensor) -> list[torch.Tensor]:
        out.backward(grad)
        result = [out.detach()] + [t.grad.clone() for t in leaves]  # type: ignore[union-attr]
        for t in leaves:
            t.grad = None
        return result

    got = outputs_and_grads(cpu_kernels.head_attention_fcnn(scores, messages, fcnn))
    want = outputs_and_grads(fcnn((torch.softmax(scores, dim=0) * messages).sum(dim=0)))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * max(1.0, float(b.abs().max())))


@pytest.mark.parametrize(("rows", "matrices", "features", "out"), [(1600, 50, 32, 32), (5, 2, 3, 4), (0, 3, 8, 8)])
def test_indexed_product_equals_a_gathered_batched_product(rows: int, matrices: int, features: int, out: int) -> None:
    generator = torch.Generator().manual_seed(rows)
    x = torch.randn(rows, features, generator=generator, requires_grad=True)
    weights = torch.randn(matrices, features, out, generator=generator, requires_grad=True)
    index = torch.randint(0, matrices, (rows,), generator=generator)
    grad = torch.randn(rows, out, generator=generator)
    got = cpu_kernels.indexed_product(x, weights, index)
    got.backward(grad)
    got_grads = [x.grad.clone(), weights.grad.clone()]  # type: ignore[union-attr]
    x.grad = weights.grad = None
    want = torch.bmm(x.unsqueeze(1), weights.index_select(0, index)).squeeze(1)
    want.backward(grad)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for a, t in zip(got_grads, (x, weights)):
        torch.testing.assert_close(a, t.grad, rtol=1e-5, atol=1e-4)


def test_indexed_product_refuses_an_index_out_of_range() -> None:
    with pytest.raises(RuntimeError, match="out of range of the 2 weight matrices"):
        cpu_kernels.indexed_product(torch.randn(3, 4), torch.randn(2, 4, 4), torch.tensor([0, 2, 1]))


def test_kernels_apply_to_float32_cpu_tensors_only(kernels_off: None, monkeypatch: pytest.MonkeyPatch) -> None:
    assert not cpu_kernels.applies(torch.zeros(2))
    monkeypatch.setenv(kernels.ENABLE_ENV, "1")
    assert cpu_kernels.applies(torch.zeros(2))
    assert not cpu_kernels.applies(torch.zeros(2, dtype=torch.float64))


def test_edges_not_in_sender_blocks_are_refused() -> None:
    networks = EdgeNetworks(4, heads=1, hidden=4)
    term = torch.randn(5, 8)
    with pytest.raises(RuntimeError, match="blocks of 3 per sender"):
        cpu_kernels.tiled_edge_networks(
            term, term, torch.zeros(14, dtype=torch.long), 3, networks.second_layer.weight,
            networks.second_layer.bias, 1, features=torch.randn(14, 4), weight=torch.randn(8, 4),
        )  # fmt: skip


@pytest.mark.parametrize("backend", ["dgl", "torch"])
def test_model_with_kernels_equals_the_model_without(
    shared_data_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    """The cpu preset on real graphs: same outputs and gradients with and without the kernels."""
    torch.manual_seed(1)
    model = CGAT(ModelConfig.preset("cpu", backend=backend))
    with torch.no_grad():
        for block in model.head.blocks:
            block.alpha.fill_(0.5)
        for step in model.message_passing[1:]:
            step.node.damping.fill_(0.3)
    batch = collate(list(real_graphs(shared_data_path, 24)), backend)

    def run() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        out = model(batch)
        out.square().sum().backward()
        return out.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}  # type: ignore[union-attr]

    calls = []
    original = cpu_kernels.tiled_edge_networks
    monkeypatch.setattr(cpu_kernels, "tiled_edge_networks", lambda *a, **k: calls.append(1) or original(*a, **k))
    with_kernels, grads = run()
    assert len(calls) == model.config.n_graph - 1  # every step after the first
    monkeypatch.setenv(kernels.ENABLE_ENV, "0")
    without, expected = run()
    torch.testing.assert_close(with_kernels, without, rtol=0, atol=1e-5)
    for name, want in expected.items():
        scale = max(1.0, float(want.abs().max()))
        torch.testing.assert_close(grads[name], want, rtol=1e-4, atol=1e-5 * scale, msg=name)


def test_kernel_groups_are_switched_by_name_and_unknown_names_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    x = torch.zeros(2)
    monkeypatch.setenv(kernels.ENABLE_ENV, "1")
    assert kernels.enabled_groups() == kernels.GROUPS and kernels.applies(x, "attention")
    monkeypatch.setenv(kernels.ENABLE_ENV, "0")
    assert kernels.enabled_groups() == () and not kernels.applies(x) and not kernels.applies(x, "hypernetwork")
    monkeypatch.setenv(kernels.ENABLE_ENV, "hypernetwork, edge_networks")
    assert kernels.enabled_groups() == ("edge_networks", "hypernetwork")
    assert kernels.applies(x, "edge_networks") and not kernels.applies(x, "attention") and kernels.applies(x)
    monkeypatch.setenv(kernels.ENABLE_ENV, "attention,tiles")
    with pytest.raises(ValueError, match="unknown kernel group.*tiles"):
        kernels.applies(x)
    monkeypatch.setenv(kernels.ENABLE_ENV, "1")
    with pytest.raises(ValueError, match="unknown kernel group 'attn'"):
        kernels.applies(x, "attn")
