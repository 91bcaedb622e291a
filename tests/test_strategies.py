"""Delta learning and multi-fidelity training: each strategy trains what it says, on the same
evaluation materials, without the target's validation or test materials in any training set."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from benchmarks.manifest import Manifest, load_manifest
from benchmarks.plan import expand
from benchmarks.runner import Runner
from benchmarks.strategies import transfer_inputs
from cgat_dgl.data.dataset import GraphDataset
from cgat_dgl.graphs.collate import collate
from cgat_dgl.model import CGAT, ModelConfig
from cgat_dgl.training.delta import known_baseline, model_baseline, residual_dataset
from cgat_dgl.training.inference import load_checkpoint, predict_with_targets
from cgat_dgl.training.multifidelity import (
    SOURCE,
    TARGET,
    FidelityDataset,
    JointTrainingSet,
    check_no_evaluation_material,
)
from cgat_dgl.training.transfer import config_differences
from model_test_graphs import real_graphs
from smoke_manifests import smoke_options, write_smoke_manifest
from test_runner import child_runs, small_data  # noqa: F401  (a fixture)

ALL = "[none, head, full, delta, delta_known, multifidelity, multifidelity_ft]"
EXPERIMENT = """\
  - name: gap
    source: {source}
    target: gap_hse
    strategies: {strategies}
    train_sizes: {sizes}
    seeds: [0, 1]
    source_ratio: 2
"""


def manifest_path(tmp_path: Path, strategies: str = ALL, sizes: str = "[20, 1.0]", source: str = "gap_pbe") -> Path:
    return write_smoke_manifest(tmp_path, EXPERIMENT.format(source=source, strategies=strategies, sizes=sizes))


def manifest_for(tmp_path: Path, strategies: str = ALL, sizes: str = "[20, 1.0]") -> Manifest:
    return load_manifest(manifest_path(tmp_path, strategies, sizes))


@pytest.fixture(scope="module")
def graphs(shared_sample_path: Path) -> list:
    return [graph for graph, _ in real_graphs(shared_sample_path, 12)]


def dataset(graphs: list, start: int, stop: int, offset: float = 0.0) -> GraphDataset:
    chosen = graphs[start:stop]
    return GraphDataset([g.id for g in chosen], chosen, np.arange(len(chosen), dtype=np.float32) + offset)


# --- plan ----------------------------------------------------------------------------------------
def test_plan_links_each_strategy_to_what_it_starts_from(tmp_path: Path) -> None:
    pretrains, transfers = expand(manifest_for(tmp_path), "smoke")
    assert len(pretrains) == 1 and len(transfers) == 7 * 2 * 2
    by = {(r.strategy, r.train_size, r.seed): r for r in transfers}
    for size in (20, 1.0):
        for seed in (0, 1):
            joint = by[("multifidelity", size, seed)]
            tuned = by[("multifidelity_ft", size, seed)]
            assert tuned.joint is joint and tuned.dependencies == (joint,)
            assert joint.dependencies == () and joint.source_pool == pretrains[0] and joint.source_ratio == 2.0
            assert joint.model["n_fidelities"] == 2 == tuned.model["n_fidelities"]
            assert "n_fidelities" not in by[("full", size, seed)].model
            assert by[("delta", size, seed)].dependencies == (pretrains[0],)
            assert by[("delta", size, seed)].stage["normalization"] == "refit"
            assert by[("delta_known", size, seed)].stage["normalization"] == "refit"
            assert by[("full", size, seed)].stage["normalization"] == "keep"
    assert len({r.key for r in transfers}) == len(transfers)


def test_new_strategies_leave_the_keys_of_the_others_unchanged(tmp_path: Path) -> None:
    _, with_new = expand(manifest_for(tmp_path / "a"), "smoke")
    _, without = expand(manifest_for(tmp_path / "b", strategies="[none, head, full]"), "smoke")
    old = {(r.strategy, r.train_size, r.seed): r.key for r in without}
    assert {k: r.key for r in with_new if (k := (r.strategy, r.train_size, r.seed)) in old} == old


def test_manifest_rejects_a_correction_across_quantities(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="changes the quantity"):
        load_manifest(manifest_path(tmp_path, strategies="[delta]", sizes="[1.0]", source="volume_pbe"))
    with pytest.raises(ValueError, match="list multifidelity too"):
        load_manifest(manifest_path(tmp_path, strategies="[full, multifidelity_ft]", sizes="[1.0]"))


# --- the pieces ----------------------------------------------------------------------------------
def test_residuals_and_known_baseline(graphs: list) -> None:
    data = dataset(graphs, 0, 4, offset=10.0)
    baseline = {graph_id: float(i) for i, graph_id in enumerate(data.ids)}
    assert np.allclose(residual_dataset(data, baseline).targets, 10.0)
    with pytest.raises(KeyError, match="no baseline"):
        residual_dataset(data, dict(list(baseline.items())[:2]))
    import pandas as pd

    values = pd.Series([1.0, np.nan], index=data.ids[:2])
    with pytest.raises(ValueError, match="gap_pbe value of every material"):
        known_baseline(values, data.ids[:2], "gap_pbe")


def test_a_joint_batch_carries_the_fidelity_of_each_crystal(graphs: list) -> None:
    source, target = dataset(graphs, 0, 9), dataset(graphs, 9, 12, offset=100.0)
    joint = JointTrainingSet(source, target, source_ratio=2)
    assert joint.source_per_epoch == 6 and len(joint) == 9
    view = joint.epoch_view(seed=3)
    batch = collate([view[i] for i in range(len(view))], backend="torch")
    fidelity = dict(zip(batch.ids, batch.fidelity.tolist()))
    targets = dict(zip(batch.ids, batch.targets.tolist()))
    assert sorted(graph_id for graph_id, f in fidelity.items() if f == TARGET) == sorted(target.ids)
    assert sum(f == SOURCE for f in fidelity.values()) == 6
    assert all(targets[graph_id] >= 100.0 for graph_id in target.ids)  # target items keep their labels
    drawn = lambda seed: [i for i in joint.epoch_view(seed).ids if i in source.ids]  # noqa: E731
    assert drawn(3) == drawn(3) and drawn(3) != drawn(4)  # seeded: a resumed epoch draws the same
    plain = collate([target[i] for i in range(len(target))], backend="torch")
    assert plain.fidelity is None
    with pytest.raises(ValueError, match="must all be"):
        collate([target[0], view[0]], backend="torch")


def test_joint_set_refuses_evaluation_materials() -> None:
    with pytest.raises(ValueError, match="1 test material"):
        check_no_evaluation_material(["a", "b"], {"validation": ["c"], "test": ["b"]})


def test_fidelity_embedding_enters_the_context(graphs: list) -> None:
    config = ModelConfig.preset("smoke", backend="torch", n_fidelities=2)
    torch.manual_seed(0)
    model = CGAT(config).eval()
    items = [(graph, 0.0, f) for graph, f in zip(graphs[:4], (0, 1, 0, 1))]
    batch = collate(items, backend="torch")
    same = collate([(g, 0.0, 0) for g, _, _ in items], backend="torch")
    with torch.no_grad():
        assert torch.equal(model(batch), model(same))  # zero-initialised: one model at the start
        model.fidelity.weight[1].fill_(0.5)
        moved = model(batch) != model(same)
    assert moved[[1, 3]].any() and not moved[[0, 2]].any()
    with pytest.raises(ValueError, match="needs the fidelity"):
        model(collate([(g, 0.0) for g, _, _ in items], backend="torch"))
    assert "fidelity" in model.module_groups()
    # a checkpoint written before the field existed is a single-fidelity model
    plain = ModelConfig.preset("smoke").model_dump(mode="json")
    assert config_differences({k: v for k, v in plain.items() if k != "n_fidelities"}, plain) == {}


# --- end to end ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_every_strategy_trains_what_it_says(tmp_path: Path, small_data: Path) -> None:  # noqa: F811
    manifest = manifest_for(tmp_path, sizes="[1.0]")
    options = smoke_options(tmp_path, small_data)
    runner = Runner(manifest, options)
    outcome = runner.run()
    assert not outcome.failed and len(outcome.done) == 1 + 7 * 2
    runs = {
        (r.data.tags["cgat.strategy"], int(r.data.tags["cgat.seed"])): r
        for r in child_runs(options.tracking_uri) if r.data.tags["cgat.kind"] == "transfer"
    }  # fmt: skip
    specs = {(s.strategy, s.seed): s for s in runner.transfers}
    pretrain = runner.pretrains[0]
    work = options.work_dir / "checkpoints"
    data = runner.task_data
    _, _, test_set = data.transfer_sets("gap_hse", 1.0, None, 16)

    def logged_predictions(key: str) -> dict[str, float]:
        with open(work / key / "test_predictions.csv", newline="") as handle:
            return {row["id"]: float(row["prediction"]) for row in csv.DictReader(handle)}

    def corrections(key: str, data_set) -> dict[str, float]:
        model, normalizer, _ = load_checkpoint(work / key / "best.pt")
        predicted, _, ids = predict_with_targets(model, normalizer, data_set, 64)
        return dict(zip(ids, predicted.tolist()))

    # delta: the prediction is the source model's plus the correction
    source = model_baseline(work / pretrain.key / "best.pt", [test_set])
    correction = corrections(specs[("delta", 0)].key, test_set)
    logged = logged_predictions(specs[("delta", 0)].key)
    assert set(logged) == set(test_set.ids)
    assert all(logged[i] == pytest.approx(source[i] + correction[i], abs=1e-5) for i in test_set.ids)
    # delta_known: the known PBE gap plus the correction
    known = data.loaded.targets["gap_pbe"]
    correction = corrections(specs[("delta_known", 0)].key, test_set)
    logged = logged_predictions(specs[("delta_known", 0)].key)
    assert all(logged[i] == pytest.approx(known[i] + correction[i], abs=1e-5) for i in test_set.ids)
    # every strategy is scored on the same materials, in target units
    for (strategy, seed), run in runs.items():
        assert set(logged_predictions(specs[(strategy, seed)].key)) == set(test_set.ids), strategy
        assert run.data.metrics["test_mae"] == pytest.approx(
            np.mean([abs(logged_predictions(specs[(strategy, seed)].key)[i] - t) for i, t in zip(test_set.ids, test_set.targets)]),
            rel=1e-4,
        )

    # multifidelity: the joint training set holds no validation or test material of the target
    joint_spec = specs[("multifidelity", 0)]
    inputs = transfer_inputs(joint_spec, data, options.work_dir)
    joint = inputs.train_set
    assert isinstance(joint, JointTrainingSet) and len(joint.source) == data.resolved_pretrain_size(pretrain)
    assert not set(joint.ids) & (set(inputs.val_set.ids) | set(inputs.test_set.ids))
    assert isinstance(inputs.test_set, FidelityDataset) and inputs.test_set.fidelity == TARGET
    joint_run = runs[("multifidelity", 0)]
    assert joint_run.data.params["source_ratio"] == "2.0"
    assert joint_run.data.metrics["trained_structures"] == 2 * len(joint)  # 2 epochs
    assert "cgat.pretrain_run_id" not in joint_run.data.tags
    # multifidelity_ft starts from that joint run and trains on the target alone
    tuned = runs[("multifidelity_ft", 0)]
    assert tuned.data.tags["cgat.joint_run_id"] == joint_run.info.run_id
    n_target = int(tuned.data.params["train_size"])
    assert tuned.data.metrics["trained_structures"] == 2 * n_target
    assert tuned.data.metrics["total_trained_structures"] == 2 * n_target + 2 * len(joint)
    full = runs[("full", 0)]
    pretrain_passes = 2 * int(full.data.params["pretrain_size"])
    assert full.data.metrics["total_trained_structures"] == 2 * n_target + pretrain_passes
    assert runs[("none", 0)].data.metrics["total_trained_structures"] == 2 * n_target
    client = MlflowClient(options.tracking_uri)
    assert client.get_run(joint_run.info.run_id).data.tags["cgat.suite"] == "paper"
