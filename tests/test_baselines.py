"""The baselines: closed-form fits checked against their definitions, run by the manifest runner like
any strategy, and used by the report to flag runs that learned nothing and to state what transfer
must beat."""

from __future__ import annotations

import csv
import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks.manifest import load_manifest
from benchmarks.report.baselines import median_failures, source_linear_sentences
from benchmarks.report.claims import claim_verdicts, claims_table
from benchmarks.report.comparisons import comparison_table
from benchmarks.report.convergence import ConvergenceGate
from benchmarks.report.scaling import fit_table, size_points
from benchmarks.report.statistics import CONTRADICTED, NOT_CONVERGED, REPRODUCED
from benchmarks.report.tables import table1, table1_markdown
from benchmarks.runner import Runner
from cgat_dgl.baselines import element_fractions, fit_predictions, least_absolute_deviations
from cgat_dgl.data.dataset import GraphDataset, graph_composition
from cgat_dgl.training.delta import model_baseline
from model_test_graphs import real_graphs
from smoke_manifests import smoke_options, write_smoke_manifest
from test_runner import small_data  # noqa: F401  (a fixture)


def _objective(features: np.ndarray, targets: np.ndarray, weights: np.ndarray) -> float:
    return float(np.abs(features @ weights - targets).sum())


# --- the fits ---------------------------------------------------------------------------------------


def test_least_absolute_deviations_is_the_median_for_a_constant() -> None:
    targets = np.array([3.0, -1.0, 10.0, 2.0, 2.5])
    (weight,) = least_absolute_deviations(np.ones((5, 1)), targets)
    assert weight == pytest.approx(np.median(targets))


def test_least_absolute_deviations_is_optimal_and_robust() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 4, 200)
    features = np.column_stack([np.ones_like(x), x])
    targets = 0.5 + 1.3 * x + rng.laplace(0, 0.1, 200)
    targets[:10] += 50.0  # outliers pull least squares, not least absolute deviations
    weights = least_absolute_deviations(features, targets)
    assert weights == pytest.approx([0.5, 1.3], abs=0.05)
    squares = np.linalg.lstsq(features, targets, rcond=None)[0]
    best = _objective(features, targets, weights)
    assert best <= _objective(features, targets, squares)
    for step in rng.normal(0, 0.01, (50, 2)):  # no nearby point does better
        assert best <= _objective(features, targets, weights + step) + 1e-9
    # a solution of a linear programme is a vertex: as many residuals are zero as there are weights
    assert int((np.abs(features @ weights - targets) < 1e-7).sum()) >= 2


@pytest.fixture(scope="module")
def graphs(shared_sample_path: Path) -> list:
    return [graph for graph, _ in real_graphs(shared_sample_path, 24)]


def _dataset(graphs: list, targets: np.ndarray) -> GraphDataset:
    return GraphDataset([g.id for g in graphs], graphs, targets)


def test_element_fractions_are_the_formula_fractions(graphs: list) -> None:
    fractions = element_fractions(_dataset(graphs, np.zeros(len(graphs))))
    assert fractions.sum(axis=1) == pytest.approx(np.ones(len(graphs)))
    for row, graph in zip(fractions, graphs):
        composition = graph_composition(graph).fractional_composition
        assert {z: row[z] for z in np.flatnonzero(row)} == pytest.approx({el.Z: amount for el, amount in composition.items()})


def test_each_fit_predicts_what_it_says(graphs: list) -> None:
    train_graphs, test_graphs = graphs[:16], graphs[16:]
    rng = np.random.default_rng(1)
    source = pd.Series(rng.uniform(0, 3, len(graphs)), index=[g.id for g in graphs])
    train = _dataset(train_graphs, (1.2 * source.iloc[:16] + 0.4).to_numpy())
    test = _dataset(test_graphs, (1.2 * source.iloc[16:] + 0.4).to_numpy())
    median = fit_predictions("median", train, [test])
    assert set(median) == set(test.ids) and list(median.values()) == pytest.approx([float(np.median(train.targets))] * len(test))
    as_is = fit_predictions("source_value", train, [test], source_values=source)
    assert all(as_is[i] == pytest.approx(source[i]) for i in test.ids)
    linear = fit_predictions("source_linear", train, [test], source_values=source)  # exact on a noiseless line
    assert all(linear[i] == pytest.approx(1.2 * source[i] + 0.4, abs=1e-5) for i in test.ids)
    # per-element values: a target that is a sum of per-element values is recovered
    values = rng.normal(0, 1, 119)
    per_element = lambda d: element_fractions(d) @ values  # noqa: E731
    train_el = _dataset(train_graphs, per_element(_dataset(train_graphs, np.zeros(16))))
    fitted = fit_predictions("composition_linear", train_el, [train_el])
    assert [fitted[i] for i in train_el.ids] == pytest.approx(list(train_el.targets), abs=1e-4)
    with pytest.raises(ValueError, match="needs the gap_pbe value"):
        fit_predictions("source_linear", train, [test], source="gap_pbe")
    with pytest.raises(ValueError, match="delta_known needs|have none"):
        fit_predictions("source_value", train, [test], source_values=source.iloc[:16])


# --- run by the manifest runner ---------------------------------------------------------------------

EXPERIMENTS = """\
  - name: gap
    source: gap_pbe
    target: gap_hse
    strategies: [constant, zero_shot, composition_linear, source_value, source_linear]
    train_sizes: [20]
    seeds: [0]
    subsets_above: {gap_above_0.1: 0.1}
"""


@pytest.mark.slow
def test_the_runner_fits_each_baseline_on_the_training_subset(tmp_path: Path, small_data: Path) -> None:  # noqa: F811
    options = smoke_options(tmp_path, small_data)
    runner = Runner(load_manifest(write_smoke_manifest(tmp_path, EXPERIMENTS)), options)
    outcome = runner.run()
    assert not outcome.failed and len(outcome.done) == 1 + 5  # zero_shot needs the pre-training
    from benchmarks.report import collect_runs

    runs, _ = collect_runs(options.tracking_uri)
    transfers = runs[runs["kind"] == "transfer"].set_index("strategy")
    assert set(transfers["stop_reason"]) == {"fitted"} and transfers["converged"].all()
    # the same code and packages as the pre-training it is compared with: one results version
    assert runs["results_version"].nunique() == 1 and "unrecorded" not in set(runs["results_version"])
    assert "unrecorded" not in set(transfers["machine"])
    assert transfers["epochs_run"].eq(0).all() and transfers["test_mae_gap_above_0.1"].notna().all()
    assert transfers.loc["zero_shot", "pretrain_run_id"] == runs.loc[runs["kind"] == "pretrain", "run_id"].iloc[0]
    data = runner.task_data
    train, _, test = data.transfer_sets("gap_hse", 20, None, 16, subset_seed=0)
    specs = {s.strategy: s for s in runner.transfers}

    def logged(name: str) -> dict[str, float]:
        with open(options.work_dir / "checkpoints" / specs[name].key / "test_predictions.csv", newline="") as handle:
            return {row["id"]: float(row["prediction"]) for row in csv.DictReader(handle)}

    for name in specs:
        predicted = logged(name)
        assert set(predicted) == set(test.ids), name
        mae = np.mean([abs(predicted[i] - t) for i, t in zip(test.ids, test.targets)])
        assert transfers.loc[name, "test_mae"] == pytest.approx(mae, rel=1e-5), name
    assert list(logged("constant").values()) == pytest.approx([float(np.median(train.targets))] * len(test))
    pbe = data.loaded.targets["gap_pbe"]
    assert all(value == pytest.approx(pbe[i]) for i, value in logged("source_value").items())
    pretrain_checkpoint = options.work_dir / "checkpoints" / runner.pretrains[0].key / "best.pt"
    source_model = model_baseline(pretrain_checkpoint, [test])
    assert all(value == pytest.approx(source_model[i], abs=1e-5) for i, value in logged("zero_shot").items())
    # the linear correction of the PBE gap is no worse on its training subset than the gap as is
    x = np.asarray([pbe[i] for i in train.ids])
    weights = least_absolute_deviations(np.column_stack([np.ones_like(x), x]), train.targets.astype(float))
    assert _objective(np.column_stack([np.ones_like(x), x]), train.targets, weights) <= np.abs(x - train.targets).sum() + 1e-6


# --- in the report ----------------------------------------------------------------------------------

SEEDS = (0, 1, 2)


def _mae(strategy: str, seed: int) -> float:
    return {
        "none": 0.68, "head": 0.50, "full": 0.40, "constant": 0.70, "zero_shot": 0.60,
        "composition_linear": 0.65, "source_value": 0.45, "source_linear": 0.30,
    }[strategy] + 0.01 * seed  # fmt: skip


def _runs(maes: dict[tuple[str, int], float] | None = None) -> pd.DataFrame:
    rows = []
    for strategy, seed in itertools.product(("none", "head", "full", "constant", "zero_shot", "composition_linear",
                                             "source_value", "source_linear"), SEEDS):  # fmt: skip
        pretrained = strategy in ("head", "full", "zero_shot")
        rows.append({
            "run_id": f"{strategy}-{seed}", "kind": "transfer", "experiment": "gap", "profile": "cpu",
            "strategy": strategy, "source": "gap_pbe", "target": "gap_hse", "task_type": "intra", "seed": seed,
            "train_size": 1000, "pretrain_size": 20000 if pretrained else 0,
            "pretrain_run_id": "pre" if pretrained else None, "suite": "paper",
            "stop_reason": "fitted" if strategy not in ("none", "head", "full") else "plateau",
            "test_mae": (maes or {}).get((strategy, seed), _mae(strategy, seed)),
        })  # fmt: skip
    rows.append({"run_id": "pre", "kind": "pretrain", "experiment": "pretrain", "profile": "cpu", "strategy": "pretrain",
                 "source": "gap_pbe", "target": "gap_pbe", "task_type": "pretrain", "seed": 0, "train_size": 20000,
                 "pretrain_size": 0, "pretrain_run_id": None, "suite": "paper", "stop_reason": "plateau", "test_mae": 0.4})  # fmt: skip
    runs = pd.DataFrame(rows)
    return runs.assign(test_rmse=1.3 * runs["test_mae"], test_r2=0.5, best_val_mae=runs["test_mae"], joint_run_id=None,
                       source_ratio=math.nan)  # fmt: skip


def test_table1_shows_the_baselines_and_flags_runs_that_do_not_beat_the_median() -> None:
    runs = _runs({("none", 1): 0.72})  # seed 1 of no transfer: above its training median (0.71)
    assert median_failures(runs) == frozenset({"none-1"})
    table = table1(runs)
    assert set(table["strategy"]) == {"pretrain", "none", "head", "full", "constant", "zero_shot", "composition_linear",
                                      "source_value", "source_linear"}  # fmt: skip
    assert table.set_index("strategy").loc["none", "n_failed"] == 1
    assert table.set_index("strategy").loc["full", "n_failed"] == 0
    markdown = table1_markdown(table)
    assert "✗1" in markdown and "not below that of the training median" in markdown
    assert "training median" in markdown.splitlines()[0] and "source value, linear correction #" in markdown.splitlines()[0]
    # every baseline that needs the source value is marked with its footnote
    assert "needs that calculation for every material it predicts" in markdown


def test_no_verdict_rests_on_a_run_that_does_not_beat_the_median() -> None:
    runs = _runs({("none", 1): 0.72})
    comparisons = comparison_table(runs)
    gate = ConvergenceGate(failed_runs=median_failures(runs))
    claims = claims_table(runs, comparisons, fit_table(size_points(runs), runs), gate=gate)
    full_none = claims[claims["claim_id"] == "full_beats_none"].iloc[0]
    assert full_none["verdict"] == NOT_CONVERGED
    assert "1 of 6 runs not below the training median: gap none N1000 seed 1" in full_none["detail"]
    assert claims[claims["claim_id"] == "full_beats_head"].iloc[0]["verdict"] == REPRODUCED


def test_full_transfer_against_the_baselines() -> None:
    runs = _runs()
    comparisons = comparison_table(runs)
    claims = claims_table(runs, comparisons, fit_table(size_points(runs), runs))
    against = claims[claims["claim_id"] == "full_beats_baselines"]
    assert [c.split("against ")[1] for c in against["check"]] == ["training median", "pre-trained model as is",
                                                                  "linear in element fractions"]  # fmt: skip
    assert set(against["verdict"]) == {REPRODUCED}
    verdicts = claim_verdicts(claims).set_index("claim_id")["verdict"]
    assert verdicts["full_beats_source_linear"] == CONTRADICTED  # 0.40 against 0.30 on every seed
    (sentence,) = source_linear_sentences(comparisons)
    assert sentence.startswith("gap (gap_pbe → gap_hse, N train 1000): full transfer (test MAE 0.41) is worse than")
    assert "gap_pbe calculation" in sentence
    better = _runs({("full", s): 0.2 for s in SEEDS})
    assert source_linear_sentences(comparison_table(better)) == []
