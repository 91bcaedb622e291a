"""The CGAT model: shapes, symmetries, backend agreement, the paper's equations, presets and groups."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from pymatgen.core import Structure
from torch import nn

from cgat_dgl.graphs.batch import Batch
from cgat_dgl.graphs.collate import collate
from cgat_dgl.model import CGAT, ModelConfig
from cgat_dgl.model.edge_networks import EdgeNetworks
from cgat_dgl.model.edge_update import PaperEdgeUpdate
from cgat_dgl.model.fast.edge_features import EdgeFeatures, EdgeKinds, EdgeSet, InitialFeatures, sender_block
from cgat_dgl.model.fast.hypernetwork import apply_hyper_mlp
from cgat_dgl.model.fast.networks import evaluate_networks
from cgat_dgl.model.hypernetwork import HyperMLP
from cgat_dgl.model.node_update import NodeUpdate
from cgat_dgl.model.roost import RoostMessageStep
from cgat_dgl.ops import make_graph_ops
from cgat_dgl.ops.base import GraphOps
from cgat_dgl.training.checkpoint import load_model_state
import legacy_cgat
from model_test_graphs import cut_splits_a_shell, graph_from_structure, read_records, real_graphs

GROUPS = {"embedding", "message_passing", "roost", "pooling", "head"}


def smoke_model(seed: int = 0, **overrides: object) -> CGAT:
    torch.manual_seed(seed)
    model = CGAT(ModelConfig.preset("smoke", **overrides))
    # ReZero scalars start at 0, which hides most of the network from the output; give them
    # values so that every part of the model is exercised.
    with torch.no_grad():
        for block in model.head.blocks:
            block.alpha.fill_(0.5)
    return model


def with_backend(model: CGAT, backend: str) -> CGAT:
    twin = CGAT(model.config.model_copy(update={"backend": backend})).to(next(model.parameters()).dtype)
    twin.load_state_dict(model.state_dict())
    return twin


def assert_same_outputs_and_gradients(model: CGAT, twin: CGAT, batches: tuple[Batch, Batch], tolerance: float) -> None:
    out, twin_out = model(batches[0]), twin(batches[1])
    torch.testing.assert_close(twin_out, out, rtol=0, atol=tolerance)
    out.square().sum().backward()
    twin_out.square().sum().backward()
    twin_grads = dict(twin.named_parameters())
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        scale = max(1.0, float(p.grad.abs().max()))
        torch.testing.assert_close(twin_grads[name].grad, p.grad, rtol=0, atol=tolerance * scale, msg=name)


@pytest.fixture(scope="module")
def items(shared_data_path: Path) -> list:
    return list(real_graphs(shared_data_path, 24))


@pytest.fixture(scope="module")
def clean_structures(shared_data_path: Path) -> list[tuple[str, Structure]]:
    """Structures whose 24 nearest neighbours are unambiguous (no shell is cut at the 24th)."""
    found = [(rid, s) for rid, s, _ in read_records(shared_data_path, 60) if not cut_splits_a_shell(s)]
    found = [(rid, s) for rid, s in found if len(s) <= 16 and len(s.composition.elements) > 1]
    assert len(found) >= 2
    return found[:2]


def predict(model: CGAT, structures: list[tuple[str, Structure]]) -> torch.Tensor:
    batch = collate([(graph_from_structure(rid, s), 0.0) for rid, s in structures], model.config.backend)
    model.eval()
    with torch.no_grad():
        return model(batch)


# --- shapes, backends, symmetries ---------------------------------------------------------------


@pytest.mark.parametrize("backend", ["dgl", "torch"])
@pytest.mark.parametrize("edge_update", ["paper", "reference", "none"])
def test_forward_shape_and_every_parameter_gets_a_gradient(items: list, backend: str, edge_update: str) -> None:
    model = smoke_model(backend=backend, edge_update=edge_update)
    batch = collate(items, backend)
    out = model(batch)
    assert out.shape == (len(items), 2)
    assert torch.isfinite(out).all()
    out.sum().backward()
    # Every parameter is connected to the output (the last biases of score networks get ~0:
    # a softmax does not change when all its scores shift together).
    assert [name for name, p in model.named_parameters() if p.grad is None] == []
    assert model.message_passing[0].node.networks.first_layer.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("edge_update", ["paper", "reference"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_backends_agree_with_identical_weights(items: list, edge_update: str, dtype: torch.dtype) -> None:
    tolerance = {torch.float32: 1e-5, torch.float64: 1e-10}[dtype]
    dgl_model = smoke_model(backend="dgl", edge_update=edge_update).to(dtype)
    torch_model = with_backend(dgl_model, "torch")
    batches = (collate(items, "dgl"), collate(items, "torch"))
    assert_same_outputs_and_gradients(dgl_model, torch_model, batches, tolerance)


@pytest.mark.parametrize("backend", ["dgl", "torch"])
def test_prediction_does_not_depend_on_the_order_of_atoms(clean_structures: list, backend: str) -> None:
    model = smoke_model(backend=backend).double()
    rng = np.random.default_rng(0)
    permuted = []
    for rid, structure in clean_structures:
        order = rng.permutation(len(structure))
        assert not np.array_equal(order, np.arange(len(structure)))
        permuted.append((rid, Structure.from_sites([structure[int(i)] for i in order])))
    torch.testing.assert_close(predict(model, permuted), predict(model, clean_structures), rtol=0, atol=1e-10)


@pytest.mark.parametrize("backend", ["dgl", "torch"])
def test_supercell_predicts_like_its_primitive_cell(clean_structures: list, backend: str) -> None:
    model = smoke_model(backend=backend).double()
    supercells = [(rid, structure.make_supercell([2, 1, 1], in_place=False)) for rid, structure in clean_structures]
    assert len(supercells[0][1]) == 2 * len(clean_structures[0][1])
    torch.testing.assert_close(predict(model, supercells), predict(model, clean_structures), rtol=0, atol=1e-10)


@pytest.mark.parametrize("backend", ["dgl", "torch"])
def test_single_element_compositions(items: list, backend: str) -> None:
    elemental = [(g, t) for g, t in items if len(g.comp_elements) == 1]
    assert len(elemental) >= 2  # Cs and Si among the first records
    batch = collate(elemental, backend)
    assert batch.comp_src.numel() == 0
    model = smoke_model(backend=backend)
    alone = model(batch)
    assert torch.isfinite(alone).all()
    mixed = model(collate(items, backend))
    positions = [i for i, (g, _) in enumerate(items) if len(g.comp_elements) == 1]
    torch.testing.assert_close(mixed[positions], alone, rtol=0, atol=1e-5)


# --- the equations, against literal per-node implementations -------------------------------------


def small_graph(seed: int = 0) -> tuple[GraphOps, torch.Tensor]:
    """A random graph where node 4 receives nothing, with random ranks (DGL ops: the plain layers
    read ``ops.graph``)."""
    src = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 0, 3])
    dst = torch.tensor([1, 2, 0, 2, 0, 3, 1, 2, 0, 1, 3, 0])
    rank = torch.randint(1, 5, (src.numel(),), generator=torch.Generator().manual_seed(seed))
    return make_graph_ops("dgl", src, dst, 5, torch.zeros(5, dtype=torch.long), 1), rank


def literal_fcnn(first: nn.Linear, second_w: torch.Tensor, second_b: torch.Tensor, z: torch.Tensor,
                 group: int, hidden: int) -> torch.Tensor:  # fmt: skip
    """Group ``group``'s MLP: LeakyReLU(z W1_g + b1_g) W2_g + b2_g."""
    rows = slice(group * hidden, (group + 1) * hidden)
    pre = z @ first.weight[rows].t() + first.bias[rows]
    return nn.functional.leaky_relu(pre) @ second_w[group] + second_b[group, 0]


def test_hypernetwork_applies_per_node_generated_layers() -> None:
    torch.manual_seed(0)
    net = HyperMLP(features=5, hyper_hidden=7, hyper_layers=2).double()
    x, hyper_input = torch.randn(4, 5, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    out = net(x, hyper_input)
    hidden = net.hidden(hyper_input)
    for node in range(4):
        y = x[node]
        for layer in range(4):
            weight = net.weight_out[layer](hidden[layer][node]).view(5, 5)
            y = y @ weight + net.bias_out[layer](hidden[layer][node])
            if layer < 3:
                y = torch.tanh((y - y.mean()) / torch.sqrt(y.var(unbiased=False) + 1e-5))
        torch.testing.assert_close(out[node], y)


def test_fast_hypernetwork_equals_the_generated_layers() -> None:
    torch.manual_seed(0)
    net = HyperMLP(features=5, hyper_hidden=7, hyper_layers=3).double()
    x, hyper_input = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 5, dtype=torch.float64)
    torch.testing.assert_close(apply_hyper_mlp(net, x, hyper_input), net(x, hyper_input))
    # Rows that share a hypernetwork input may give it once, with an index.
    index = torch.tensor([1, 0, 0, 1, 2, 2])
    shared = apply_hyper_mlp(net, x, hyper_input[:3], index=index)
    torch.testing.assert_close(shared, net(x, hyper_input[:3][index]))


@pytest.mark.parametrize("first", [True, False])
def test_node_update_follows_equation_1(first: bool) -> None:
    config = ModelConfig.preset("smoke")
    torch.manual_seed(1)
    update = NodeUpdate(config, first=first).double()
    if not first:
        with torch.no_grad():
            update.damping.fill_(0.3)
    ops, rank = small_graph()
    f, heads, hidden = config.atom_fea_len, config.msg_heads, config.fcnn_hidden
    h, table, h0 = (torch.randn(5, f, dtype=torch.float64) for _ in range(3))
    if first:
        h = h0  # the first step starts from the initial embedding
    out = update(ops.graph, h, h0, table[rank])

    lin, w2, b2 = update.networks.first_layer, update.networks.second_layer.weight, update.networks.second_layer.bias
    aggregate = torch.zeros(5, f, dtype=torch.float64)
    for i in range(5):
        incoming = (ops.dst == i).nonzero().flatten()
        if len(incoming) == 0:
            continue  # node 4 receives nothing
        z = torch.stack([torch.cat([h[i], h[ops.src[k]], table[rank[k]]]) for k in incoming])
        for n in range(heads):
            s = literal_fcnn(lin, w2, b2, z, n, hidden)  # eq. 1a (one row per incoming edge)
            m = literal_fcnn(lin, w2, b2, z, heads + n, hidden)  # eq. 1c
            a = torch.exp(s) / torch.exp(s).sum(dim=0)  # eq. 1b, per channel
            aggregate[i] += (a * m).sum(dim=0) / heads  # eq. 1d
    hyper_input = h0 if first else 0.3 * h0 + 0.7 * aggregate
    torch.testing.assert_close(out, h + update.update(aggregate, hyper_input))


def test_damping_is_clamped_to_the_unit_interval() -> None:
    torch.manual_seed(0)
    update = NodeUpdate(ModelConfig.preset("smoke"), first=False)
    ops, rank = small_graph()
    h, h0, table = (torch.randn(5, 8) for _ in range(3))
    outputs = []
    for value in (1.0, 3.0):
        with torch.no_grad():
            update.damping.fill_(value)
        outputs.append(update(ops.graph, h, h0, table[rank]))
    torch.testing.assert_close(outputs[0], outputs[1])


def test_paper_edge_update_follows_equation_2() -> None:
    config = ModelConfig.preset("smoke")
    torch.manual_seed(2)
    update = PaperEdgeUpdate(config).double()
    ops, rank = small_graph()
    heads, hidden = config.msg_heads, config.fcnn_hidden
    h, table = torch.randn(5, 8, dtype=torch.float64), torch.randn(5, 8, dtype=torch.float64)
    out = update(ops.graph, h, table[rank])
    lin, w2, b2 = update.networks.first_layer, update.networks.second_layer.weight, update.networks.second_layer.bias
    for k in range(ops.src.numel()):
        z = torch.cat([h[ops.dst[k]], h[ops.src[k]], table[rank[k]]])
        s = torch.stack([literal_fcnn(lin, w2, b2, z, n, hidden) for n in range(heads)])  # eq. 2a
        m = torch.stack([literal_fcnn(lin, w2, b2, z, heads + n, hidden) for n in range(heads)])  # eq. 2c
        a = torch.exp(s) / torch.exp(s).sum(dim=0)  # eq. 2b: over the heads
        torch.testing.assert_close(out[k], table[rank[k]] + update.fcnn((a * m).sum(dim=0)))  # eq. 2d


# --- the fast implementation against the plain layers ---------------------------------------------


@pytest.mark.parametrize("block", [False, True])
def test_fast_networks_equal_the_networks_of_the_concatenation(block: bool) -> None:
    torch.manual_seed(0)
    node_nets, edge_nets = (EdgeNetworks(features=6, heads=2, hidden=4).double() for _ in range(2))
    if block:  # every atom sends 3 edges, in order: the sender term is broadcast
        src, dst = torch.arange(4).repeat_interleave(3), torch.tensor([1, 2, 3, 0, 2, 3, 0, 1, 1, 2, 0, 0])
        assert sender_block(src, 4) == 3
    else:
        ops, _ = small_graph()
        src, dst = ops.src, ops.dst
        assert sender_block(src, 5) is None
    n = int(src.max()) + 1
    rank = torch.randint(1, 5, (src.numel(),))
    h, table = torch.randn(n, 6, dtype=torch.float64), torch.randn(5, 6, dtype=torch.float64)
    z = torch.cat([h[dst], h[src], table[rank]], dim=1)  # [h_i || h_j || e_ij]
    expected = [part.transpose(0, 1) for nets in (node_nets, edge_nets) for part in nets(z)]
    for e in (EdgeFeatures(rank, table=table), EdgeFeatures(rank, per_edge=table[rank])):
        edges = EdgeSet(h, receiver=dst, sender=src, e=e, sender_block=3 if block else None)
        parts = evaluate_networks([node_nets, edge_nets], edges)
        for got, want in zip(parts, expected):
            torch.testing.assert_close(got, want)


def test_edge_kinds_cover_every_edge_of_the_first_step(items: list) -> None:
    model = smoke_model()
    batch = collate(items, "torch")
    h0 = InitialFeatures.embed(model.embedding.atoms, batch.atomic_numbers)
    e = EdgeFeatures(batch.edge_rank, table=model.embedding.ranks.weight)
    kinds = EdgeKinds.find(h0, e, batch.edge_src, batch.edge_dst)
    members = kinds.members
    assert members.receiver.numel() < 0.5 * batch.edge_src.numel()
    index = h0.element_index
    torch.testing.assert_close(members.receiver[kinds.of_edge], index[batch.edge_dst], rtol=0, atol=0)
    torch.testing.assert_close(members.sender[kinds.of_edge], index[batch.edge_src], rtol=0, atol=0)
    torch.testing.assert_close(members.e.row[kinds.of_edge], batch.edge_rank, rtol=0, atol=0)


def with_implementation(model: CGAT, implementation: str, backend: str = "dgl") -> CGAT:
    update = {"implementation": implementation, "backend": backend}
    twin = CGAT(model.config.model_copy(update=update)).to(next(model.parameters()).dtype)
    twin.load_state_dict(model.state_dict())
    return twin


@pytest.mark.parametrize("preset", ["smoke", "cpu"])
@pytest.mark.parametrize("edge_update", ["paper", "reference", "none"])
@pytest.mark.parametrize("backend", ["dgl", "torch"])
def test_fast_implementation_equals_the_plain_layers(items: list, preset: str, edge_update: str, backend: str) -> None:
    torch.manual_seed(4)
    plain = CGAT(ModelConfig.preset(preset, edge_update=edge_update, implementation="plain")).double()
    with torch.no_grad():
        for block in plain.head.blocks:
            block.alpha.fill_(0.5)
        for step in plain.message_passing[1:]:
            step.node.damping.fill_(0.3)
    fast = with_implementation(plain, "fast", backend)
    assert_same_outputs_and_gradients(plain, fast, (collate(items, "dgl"), collate(items, backend)), 1e-10)


def legacy_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The current weights under the parameter names of the reference model kept in the tests."""
    renamed = {}
    for name, value in state.items():
        name = name.replace(".networks.first_layer.", ".first_layer.linear.")
        renamed[name.replace(".networks.second_layer.", ".second_layer.")] = value
    return renamed


@pytest.mark.parametrize("implementation", ["plain", "fast"])
@pytest.mark.parametrize("edge_update", ["paper", "reference"])
def test_model_equals_the_reference_model_in_float32(items: list, implementation: str, edge_update: str) -> None:
    """Same weights, same outputs and gradients as the model before the plain/fast split."""
    torch.manual_seed(5)
    model = CGAT(ModelConfig.preset("cpu", edge_update=edge_update, implementation=implementation))
    with torch.no_grad():
        for block in model.head.blocks:
            block.alpha.fill_(0.5)
    reference = legacy_cgat.CGAT(legacy_cgat.ModelConfig.preset("cpu", edge_update=edge_update))
    reference.load_state_dict(legacy_state(model.state_dict()))
    batch = collate(items, "dgl")
    out, ref_out = model(batch), reference(batch)
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-5)
    out.square().sum().backward()
    ref_out.square().sum().backward()
    ref_grads = dict(reference.named_parameters())
    for name, p in legacy_state(dict(model.named_parameters())).items():
        scale = max(1.0, float(ref_grads[name].grad.abs().max()))
        torch.testing.assert_close(p.grad, ref_grads[name].grad, rtol=1e-4, atol=1e-5 * scale, msg=name)


def test_checkpoints_of_the_reference_model_load_into_the_current_one(items: list) -> None:
    torch.manual_seed(6)
    reference = legacy_cgat.CGAT(legacy_cgat.ModelConfig.preset("smoke"))
    model = CGAT(ModelConfig.preset("smoke"))
    load_model_state(model, reference.state_dict(), "old.pt")
    batch = collate(items, "dgl")
    with torch.no_grad():
        torch.testing.assert_close(model(batch), reference(batch), rtol=0, atol=1e-6)


def test_plain_implementation_needs_dgl() -> None:
    with pytest.raises(ValueError, match="plain implementation"):
        ModelConfig.preset("smoke", implementation="plain", backend="torch")


def test_roost_attention_is_weighted_by_fraction_to_the_power_p() -> None:
    torch.manual_seed(0)
    step = RoostMessageStep(features=4, hidden=6).double()
    with torch.no_grad():
        step.power.fill_(1.7)
    src, dst = torch.tensor([0, 0, 1, 1, 2, 2]), torch.tensor([1, 2, 0, 2, 0, 1])
    ops = make_graph_ops("torch", src, dst, 3, torch.zeros(3, dtype=torch.long), 1)
    x = torch.randn(3, 4, dtype=torch.float64)
    fractions = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    out = step(x, fractions.log(), ops)
    for i in range(3):
        senders = src[dst == i]
        z = torch.stack([torch.cat([x[i], x[j]]) for j in senders])
        gate = fractions[senders, None] ** 1.7 * torch.exp(step.gate(z))
        torch.testing.assert_close(out[i], x[i] + (gate / gate.sum() * step.message(z)).sum(dim=0))


# --- configuration, presets and module groups ----------------------------------------------------


def test_every_parameter_is_in_exactly_one_group() -> None:
    model = smoke_model()
    groups = model.module_groups()
    assert set(groups) == GROUPS
    owner: dict[int, list[str]] = {}
    for name, module in groups.items():
        for p in module.parameters():
            owner.setdefault(id(p), []).append(name)
    for name, p in model.named_parameters():
        assert owner.get(id(p), []) != [], f"{name} is in no group"
        assert len(owner[id(p)]) == 1, f"{name} is in groups {owner[id(p)]}"
    assert model.head.out in list(groups["head"].modules())
    assert model.head.out.out_features == 2
    assert not any(b.requires_grad for b in model.buffers())


def test_presets_build_and_report_parameter_counts(capsys: pytest.CaptureFixture[str]) -> None:
    counts = {}
    for name in ("smoke", "cpu", "paper"):
        model = CGAT(ModelConfig.preset(name))
        counts[name] = model.count_parameters()
        assert counts[name]["total"] == sum(p.numel() for p in model.parameters())
        with capsys.disabled():
            print(f"\n{name} preset: {counts[name]}")
    assert counts["smoke"]["total"] < counts["cpu"]["total"] < counts["paper"]["total"]
    # The paper-size model has tens of millions of parameters (the reference reports ~62M),
    # most of them in the hypernetworks of the message-passing steps.
    assert 20e6 < counts["paper"]["total"] < 200e6
    assert counts["paper"]["message_passing"] > 0.5 * counts["paper"]["total"]
    paper = ModelConfig.preset("paper")
    assert (paper.atom_fea_len, paper.msg_heads, paper.fcnn_hidden, paper.n_graph, paper.roost_steps) == (
        128, 6, 512, 5, 3,
    )  # fmt: skip
    assert paper.head_widths == [1024, 1024, 512, 512, 256, 256, 128]


def test_config_rejects_unknown_fields_and_presets() -> None:
    with pytest.raises(ValueError, match="extra"):
        ModelConfig(atom_fea_length=3)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="unknown model preset"):
        ModelConfig.preset("huge")
    with pytest.raises(ValueError):
        ModelConfig.preset("smoke", edge_update="sometimes")
    assert ModelConfig.preset("smoke", msg_heads=3).msg_heads == 3


def test_a_few_training_steps_fit_a_small_batch(items: list) -> None:
    model = smoke_model(backend="torch")
    batch = collate(items[:8], "torch")
    assert batch.targets is not None
    target = (batch.targets - batch.targets.mean()) / batch.targets.std()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = nn.functional.l1_loss(model(batch)[:, 0], target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_ranks_beyond_the_models_neighbour_count_are_rejected(items: list) -> None:
    model = CGAT(ModelConfig.preset("smoke", max_nbr=12, backend="torch"))
    with pytest.raises(ValueError, match="max_nbr=12"):
        model(collate(items[:4], "torch"))


def test_an_edge_update_without_a_fast_form_is_an_error_not_skipped(items: list) -> None:
    from cgat_dgl.model.edge_update import make_edge_update

    model = CGAT(ModelConfig.preset("smoke", implementation="fast"))
    model.message_passing[0].edge = nn.Linear(1, 1)  # an edge update the fast path does not know
    with pytest.raises(TypeError, match="no form of the edge update Linear"):
        model(collate(items, "dgl"))
    with pytest.raises(ValueError, match="unknown edge_update 'diagonal'"):
        make_edge_update(ModelConfig.model_construct(edge_update="diagonal"))
