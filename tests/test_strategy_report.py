"""The report on the added strategies (delta learning, multi-fidelity): Table 1, paired comparisons
with full transfer, their claims, the strategy-cost table, and runs from before the new fields."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from benchmarks.report import collect_runs, write_report
from benchmarks.report.claims import CLAIMS, claim_verdicts, claims_table
from benchmarks.report.comparisons import comparison_table
from benchmarks.report.scaling import fit_table, size_points
from benchmarks.report.statistics import CONTRADICTED, INCONCLUSIVE, REPRODUCED, paired_difference
from benchmarks.report.strategy_costs import strategy_costs
from benchmarks.report.tables import select_largest, strategy_label, table1, table1_markdown

NEW = ("delta", "delta_known", "multifidelity", "multifidelity_ft")
STRATEGIES = ("none", "head", "full", *NEW)  # the trained strategies (the baselines: test_baselines.py)
SEEDS = (0, 1, 2, 3)
TRAIN = (100, 300)
N_PRETRAIN, N_POOL = 2000, 5000  # the joint strategies draw from a larger pool than full pre-trained on
PRE_DURATION, PRE_STRUCTURES = 600.0, 60_000.0
# seed s adds NOISE[s] to full's MAE; ±0.05 around a difference of 0 puts 0 inside its interval
NOISE = (0.0, 0.05, -0.05, 0.02)


def _full(n_train: int, seed: int) -> float:
    return 2.0 * n_train**-0.3 + 0.001 * seed


def _mae(strategy: str, n_train: int, seed: int) -> float:
    full = _full(n_train, seed)
    return {
        "none": 1.5 * full,
        "head": 1.2 * full,
        "full": full,
        "delta": full - 0.02 - 0.002 * seed,  # better on every seed: reproduced
        "delta_known": full + 0.03 + 0.002 * seed,  # worse on every seed: contradicted
        "multifidelity": full + NOISE[seed],  # either way: inconclusive
        # better at 100 structures, either way at 300
        "multifidelity_ft": full - 0.05 - 0.001 * seed if n_train == 100 else full + NOISE[seed],
    }[strategy]


def _row(strategy: str, n_train: int, seed: int, experiment: str = "gap") -> dict[str, object]:
    own = {"none": 0, "multifidelity": N_POOL, "multifidelity_ft": N_POOL}.get(strategy, N_PRETRAIN)
    epochs = 10
    trained = float(epochs * n_train * (1 + 2 if strategy == "multifidelity" else 1))  # source_ratio 2
    joint_id = f"{experiment}-multifidelity-{n_train}-{seed}"
    parent = {"multifidelity_ft": None}.get(strategy, "pre-2000" if own == N_PRETRAIN else None)
    joint_trained = float(epochs * n_train * 3)
    total = trained + (PRE_STRUCTURES if parent else joint_trained if strategy == "multifidelity_ft" else 0.0)
    return {
        "run_id": f"{experiment}-{strategy}-{n_train}-{seed}",
        "kind": "transfer",
        "experiment": experiment,
        "profile": "cpu",
        "strategy": strategy,
        "source": "gap_pbe",
        "target": "gap_hse",
        "task_type": "intra",
        "seed": seed,
        "train_size": n_train,
        "pretrain_size": own,
        "pretrain_run_id": parent,
        "joint_run_id": joint_id if strategy == "multifidelity_ft" else None,
        "source_ratio": 2.0 if strategy.startswith("multifidelity") else math.nan,
        "suite": "paper" if strategy in ("none", "head", "full") else "strategies",
        "duration_s": 10.0 + n_train / 10 + seed + (5.0 if strategy == "multifidelity" else 0.0),
        "trained_structures": trained,
        "total_trained_structures": total,
        "test_mae": _mae(strategy, n_train, seed),
    }


def _runs(strategies: tuple[str, ...] = STRATEGIES) -> pd.DataFrame:
    rows = [
        {
            "run_id": "pre-2000", "kind": "pretrain", "experiment": "pretrain", "profile": "cpu", "strategy": "pretrain",
            "source": "gap_pbe", "target": "gap_pbe", "task_type": "pretrain", "seed": 0, "train_size": N_PRETRAIN,
            "pretrain_size": 0, "pretrain_run_id": None, "joint_run_id": None, "source_ratio": math.nan, "suite": "paper",
            "duration_s": PRE_DURATION, "trained_structures": PRE_STRUCTURES, "total_trained_structures": PRE_STRUCTURES,
            "test_mae": 0.2,
        }
    ]  # fmt: skip
    rows += [_row(s, n, seed) for s, n, seed in itertools.product(strategies, TRAIN, SEEDS)]
    runs = pd.DataFrame(rows)
    return runs.assign(test_rmse=1.3 * runs["test_mae"], test_r2=0.8, best_val_mae=1.05 * runs["test_mae"])


def _pick(table: pd.DataFrame, **where: object) -> pd.Series:
    mask = np.logical_and.reduce([table[column] == value for column, value in where.items()])
    found = table[mask]
    assert len(found) == 1, where
    return found.iloc[0]


# --- Table 1 --------------------------------------------------------------------------------------


def test_table1_has_a_column_per_strategy_in_order_and_the_delta_known_footnote() -> None:
    runs = _runs()
    table = table1(runs)
    on_target = table[table["strategy"] != "pretrain"]
    assert list(on_target["strategy"]) == list(STRATEGIES)
    for strategy in STRATEGIES:
        row = _pick(table, strategy=strategy)
        expected = np.mean([_mae(strategy, 300, s) for s in SEEDS])
        assert row["mae_mean"] == pytest.approx(expected) and row["n_seeds"] == len(SEEDS)
    # the joint strategies at their own (larger) source pool; full transfer is not hidden by it
    assert _pick(table, strategy="multifidelity")["pretrain_size"] == N_POOL
    assert _pick(table, strategy="full")["pretrain_size"] == N_PRETRAIN
    markdown = table1_markdown(table)
    header = markdown.splitlines()[0]
    positions = [header.index(strategy_label(s)) for s in STRATEGIES]
    assert positions == sorted(positions)
    assert "delta learning (known source value) †" in header
    assert "† delta learning (known source value) predicts" in markdown and "PBE" in markdown
    assert f"300 / {N_PRETRAIN}" in markdown and f"[pool {N_POOL}]" in markdown
    # without delta_known: no footnote
    assert "†" not in table1_markdown(table1(_runs(("none", "full"))))


def test_select_largest_keeps_each_joint_strategy_at_its_own_pool() -> None:
    runs = _runs()
    selected = select_largest(runs[runs["kind"] == "transfer"])
    assert set(selected["train_size"]) == {300}
    assert set(selected.loc[selected["strategy"] == "full", "pretrain_size"]) == {N_PRETRAIN}
    assert set(selected.loc[selected["strategy"] == "multifidelity_ft", "pretrain_size"]) == {N_POOL}
    assert set(selected["strategy"]) == set(STRATEGIES)


# --- comparisons and claims -----------------------------------------------------------------------


def test_comparisons_pair_the_new_strategies_with_full_transfer() -> None:
    runs = _runs()
    table = comparison_table(runs)
    for strategy in NEW:
        for n_train in TRAIN:
            row = _pick(table, a=strategy, b="full", train_size=n_train, metric="test_mae")
            by_a = {s: _mae(strategy, n_train, s) for s in SEEDS}
            by_b = {s: _mae("full", n_train, s) for s in SEEDS}
            expected = paired_difference(by_a, by_b)
            assert row["n"] == len(SEEDS) and row["method"] == "t over seeds"
            assert (row["diff"], row["diff_low"], row["diff_high"]) == pytest.approx((expected.mean, expected.low, expected.high))
            assert row["pretrain_size_b"] == N_PRETRAIN
    delta = _pick(table, a="delta", b="full", train_size=300)
    assert delta["diff_high"] < 0 and delta["pretrain_size"] == N_PRETRAIN
    known = _pick(table, a="delta_known", b="full", train_size=300)
    assert known["diff_low"] > 0
    joint = _pick(table, a="multifidelity", b="full", train_size=300)
    assert joint["diff_low"] < 0 < joint["diff_high"] and joint["pretrain_size"] == N_POOL


def test_single_seed_cells_get_the_bootstrap_over_materials() -> None:
    runs = _runs()
    runs = runs[(runs["kind"] == "pretrain") | (runs["seed"] == 0)]
    ids = [f"mp-{i}" for i in range(200)]
    base = pd.Series(np.abs(np.random.default_rng(0).normal(0, 1, 200)), index=ids)
    errors = {"gap-full-300-0": base + 0.3, "gap-delta-300-0": base}
    row = _pick(comparison_table(runs, errors), a="delta", b="full", train_size=300)
    assert row["method"] == "bootstrap over materials" and row["diff_high"] == pytest.approx(-0.3)


def test_claims_on_the_new_strategies_follow_the_intervals() -> None:
    runs = _runs()
    comparisons = comparison_table(runs)
    claims = claims_table(runs, comparisons, fit_table(size_points(runs), runs))
    verdicts = claim_verdicts(claims).set_index("claim_id")["verdict"]
    assert verdicts["delta_beats_full"] == REPRODUCED
    assert verdicts["delta_known_beats_full"] == CONTRADICTED
    assert verdicts["multifidelity_beats_full"] == INCONCLUSIVE
    assert verdicts["multifidelity_ft_beats_full"] == INCONCLUSIVE
    # one check per training size: multifidelity_ft is reproduced at 100 and inconclusive at 300
    ft = claims[claims["claim_id"] == "multifidelity_ft_beats_full"].set_index("check")["verdict"]
    assert ft.to_dict() == {"gap: gap_pbe → gap_hse, N train 100": REPRODUCED, "gap: gap_pbe → gap_hse, N train 300": INCONCLUSIVE}
    known = claims[claims["claim_id"] == "delta_known_beats_full"]
    assert known["claim"].str.contains("PBE").all() and known["detail"].str.contains("source value").all()
    assert known["verdict"].tolist() == [CONTRADICTED, CONTRADICTED]
    # the paper's claims are unchanged by the added strategies
    assert verdicts["full_beats_none"] == REPRODUCED


def test_claims_of_strategies_not_run_are_left_out() -> None:
    runs = _runs(("none", "head", "full"))
    claims = claims_table(runs, comparison_table(runs), fit_table(size_points(runs), runs))
    summary = claim_verdicts(claims)
    added = {c.claim_id for c in CLAIMS if c.strategy is not None}
    assert added == {"delta_beats_full", "delta_known_beats_full", "multifidelity_beats_full", "multifidelity_ft_beats_full",
                     "full_beats_baselines", "full_beats_source_linear"}
    assert not added & set(claims["claim_id"]) and not added & set(summary["claim_id"])
    assert len(summary) == len(CLAIMS) - len(added)
    # run, but with no full transfer to compare with: the claim is there, inconclusive, "not measured"
    runs = _runs(("none", "delta"))
    claims = claims_table(runs, comparison_table(runs), fit_table(size_points(runs), runs))
    delta = claims[claims["claim_id"] == "delta_beats_full"]
    assert delta["measured"].tolist() == ["not measured"] and delta["verdict"].tolist() == [INCONCLUSIVE]


# --- what each strategy trains --------------------------------------------------------------------


def test_strategy_costs_add_the_starting_runs_cost() -> None:
    runs = _runs()
    costs = strategy_costs(runs)
    assert list(costs.loc[costs["train_size"] == 100, "strategy"]) == list(STRATEGIES)
    own = np.mean([10.0 + 100 / 10 + s for s in SEEDS])  # the fixture's 10 + N_train / 10 + seed
    for strategy in ("head", "full", "delta", "delta_known"):
        row = _pick(costs, strategy=strategy, train_size=100)
        assert row["duration_s"] == pytest.approx(own)
        assert row["total_duration_s"] == pytest.approx(own + PRE_DURATION)
        assert row["n_total_duration"] == len(SEEDS) and row["starts_from"] == "pre-training run"
        assert row["pretrain_size"] == N_PRETRAIN and row["n_runs"] == len(SEEDS)
        assert row["trained_structures"] == pytest.approx(1000) and row["total_trained_structures"] == pytest.approx(1000 + PRE_STRUCTURES)
    none = _pick(costs, strategy="none", train_size=100)
    assert none["pretrain_size"] == 0 and none["total_duration_s"] == pytest.approx(none["duration_s"])
    joint = _pick(costs, strategy="multifidelity", train_size=100)
    assert joint["trained_structures"] == pytest.approx(3000) and joint["source_ratio"] == 2.0
    assert joint["total_duration_s"] == pytest.approx(own + 5.0) and joint["pretrain_size"] == N_POOL
    ft = _pick(costs, strategy="multifidelity_ft", train_size=100)
    # the fine-tuning's own time plus that of the joint run it names
    assert ft["total_duration_s"] == pytest.approx(own + own + 5.0) and ft["starts_from"] == "joint run"
    assert ft["total_trained_structures"] == pytest.approx(1000 + 3000)
    assert "source (e.g. PBE) value" in _pick(costs, strategy="delta_known", train_size=100)["note"]
    assert _pick(costs, strategy="delta", train_size=100)["suite"] == "strategies"


def test_strategy_costs_leave_unknown_totals_unknown() -> None:
    runs = _runs()
    full = (runs["strategy"] == "full") & (runs["train_size"] == 100)
    runs.loc[full & (runs["seed"] == 0), "pretrain_run_id"] = "not-in-this-report"
    runs.loc[full & (runs["seed"] == 1), "pretrain_run_id"] = None
    row = _pick(strategy_costs(runs), strategy="full", train_size=100)
    assert row["n_total_duration"] == 2
    assert row["total_duration_s"] == pytest.approx(np.mean([10.0 + 10 + s + PRE_DURATION for s in (2, 3)]))


def _old(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs frame as collect_runs built it before the new fields existed."""
    return runs.drop(columns=["joint_run_id", "source_ratio", "suite", "trained_structures", "total_trained_structures"])


def test_runs_without_the_new_fields_still_report(tmp_path: Path) -> None:
    runs = _old(_runs(("none", "head", "full")))
    costs = strategy_costs(runs)
    assert costs["trained_structures"].isna().all() and (costs["n_structures"] == 0).all()
    assert set(costs["suite"]) == {"paper"}
    path = write_report(runs, {}, tmp_path)
    text = path.read_text()
    assert "## What each strategy trains" in text and "no run logged trained_structures" in text
    assert "†" not in (tmp_path / "table1.md").read_text()
    assert "delta_beats_full" not in (tmp_path / "claims.csv").read_text()
    written = pd.read_csv(tmp_path / "strategy_costs.csv")
    assert written["total_duration_s"].notna().all()  # durations, and the pre-training run, are known


@pytest.mark.slow  # the whole report with its figures
def test_report_with_every_strategy(tmp_path: Path) -> None:
    runs = _runs()
    histories = {
        r: pd.DataFrame({"epoch": np.arange(5), "train_mae": 1.0, "val_mae": np.linspace(1, 0.5, 5), "lr": 1e-3})
        for r in runs["run_id"]
    }
    path = write_report(runs, histories, tmp_path)
    text = path.read_text()
    for strategy in STRATEGIES:
        assert f"{strategy} = {strategy_label(strategy)}" in text
    assert "delta_known − full" in text and "multifidelity_ft − full" in text
    assert text.count("needs the source (e.g. PBE) value") >= 3  # Table 1, strategy section, comparisons
    assert "Note on delta_known_beats_full" in (tmp_path / "claims.md").read_text()
    costs = pd.read_csv(tmp_path / "strategy_costs.csv")
    assert len(costs) == len(STRATEGIES) * len(TRAIN)
    assert (tmp_path / "learning_curves.png").stat().st_size > 0
    # Fig. 5 uses full transfer alone: a single pre-training size here, so the budget is skipped, not
    # filled with the joint strategies' pool sizes
    assert pd.read_csv(tmp_path / "budget_lines.csv").empty


def test_fig5_budget_uses_full_transfer_only(tmp_path: Path) -> None:
    from benchmarks.report.budget_section import budget_section
    from benchmarks.report.markdown import MarkdownReport

    def with_second_size(strategies: tuple[str, ...]) -> pd.DataFrame:
        # full transfer (and the joint strategies, at a second pool) at two sizes each way: Fig. 5 has lines
        runs = _runs(strategies)
        more = runs[runs["strategy"].isin(["full", "multifidelity", "multifidelity_ft"])].copy()
        more["pretrain_size"] *= 4
        more["test_mae"] *= 0.9
        more["run_id"] += "-x4"
        return pd.concat([runs, more], ignore_index=True)

    summaries = []
    for strategies in (("none", "full"), STRATEGIES):
        runs = with_second_size(strategies)
        points = size_points(runs)
        fits = fit_table(points, runs)
        summaries.append(budget_section(runs, points, fits, MarkdownReport("t", tmp_path), tmp_path, 5.0, (4.0,)))
    paper_only, every = summaries
    assert len(paper_only) > 0 and set(every["strategy"]) == {"full"}
    pd.testing.assert_frame_equal(paper_only, every)


# --- collect_runs ---------------------------------------------------------------------------------


@pytest.mark.slow  # creating the SQLite store takes several seconds
def test_collect_runs_reads_the_new_fields(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("cgat-bench")
    base = {"cgat.kind": "transfer", "cgat.experiment": "gap_hse", "cgat.profile": "cpu", "cgat.source": "gap_pbe",
            "cgat.target": "gap_hse", "cgat.task_type": "intra", "cgat.seed": "0"}  # fmt: skip

    def run(tags: dict[str, str], params: dict[str, str], metrics: dict[str, float]) -> str:
        run_id = client.create_run(exp, tags={**base, **tags}).info.run_id
        for name, value in {"train_size": "100", **params}.items():
            client.log_param(run_id, name, value)
        client.log_batch(run_id, metrics=[Metric(k, v, 1_700_000_000_000, 0) for k, v in {"test_mae": 0.3, **metrics}.items()])
        client.set_terminated(run_id)
        return run_id

    new = run(
        {"cgat.strategy": "multifidelity_ft", "cgat.suite": "strategies", "cgat.joint_run_id": "joint"},
        {"pretrain_size": "5000", "source_ratio": "2"},
        {"trained_structures": 1000.0, "total_trained_structures": 4000.0},
    )
    old = run({"cgat.strategy": "none"}, {}, {})
    runs = collect_runs(uri)[0].set_index("run_id")
    assert runs.loc[new, "suite"] == "strategies" and runs.loc[new, "joint_run_id"] == "joint"
    assert runs.loc[new, "source_ratio"] == 2.0 and runs.loc[new, "pretrain_size"] == 5000
    assert runs.loc[new, "trained_structures"] == 1000.0 and runs.loc[new, "total_trained_structures"] == 4000.0
    assert runs.loc[old, "suite"] == "paper" and runs.loc[old, "joint_run_id"] is None
    assert math.isnan(runs.loc[old, "source_ratio"]) and math.isnan(runs.loc[old, "trained_structures"])
    assert math.isnan(runs.loc[old, "total_trained_structures"])
