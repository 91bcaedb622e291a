"""Intervals, paired comparisons and the claims table of the report."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from benchmarks.cli import parse_seeds
from benchmarks.report.claims import claim_verdicts, claims_table
from benchmarks.report.comparisons import comparison_table
from benchmarks.report.scaling import fit_table, seed_slopes, size_points
from benchmarks.report.statistics import (
    CONTRADICTED,
    INCONCLUSIVE,
    NOT_CONVERGED,
    REPRODUCED,
    Interval,
    bootstrap_mae_difference,
    combine_verdicts,
    paired_difference,
    range_verdict,
    sign_verdict,
    t_interval,
)


def test_t_interval_matches_the_textbook_formula() -> None:
    values = [1.0, 2.0, 4.0]
    found = t_interval(values)
    half = stats.t.ppf(0.975, 2) * np.std(values, ddof=1) / math.sqrt(3)
    assert found.mean == pytest.approx(7 / 3)
    assert (found.low, found.high) == pytest.approx((7 / 3 - half, 7 / 3 + half))
    assert found.n == 3 and found.method == "t over seeds"
    one = t_interval([5.0, math.nan])
    assert one.mean == 5.0 and one.n == 1 and not one.known


def test_paired_difference_uses_only_the_common_seeds() -> None:
    a = {0: 1.0, 1: 2.0, 2: 3.0, 7: 100.0}
    b = {0: 0.5, 1: 1.0, 2: 2.5, 9: -100.0}
    found = paired_difference(a, b)
    assert found.n == 3 and found.mean == pytest.approx((0.5 + 1.0 + 0.5) / 3)


def test_bootstrap_interval_covers_the_difference_and_shrinks_with_materials() -> None:
    rng = np.random.default_rng(1)
    widths = []
    for n in (50, 2000):
        errors_b = np.abs(rng.normal(0, 1, n)) + 1.0
        errors_a = errors_b + 0.1 + rng.normal(0, 0.3, n)  # a is worse by 0.1 on average
        found = bootstrap_mae_difference(errors_a, errors_b, seed=0)
        assert found.low < 0.1 < found.high
        assert found.mean == pytest.approx(np.mean(errors_a - errors_b))
        widths.append(found.high - found.low)
    assert widths[1] < widths[0] / 3  # the interval narrows as 1/sqrt(n)
    noisy = bootstrap_mae_difference(rng.normal(0, 1, 400), rng.normal(0, 1, 400), seed=3)
    assert noisy.low < noisy.mean < noisy.high and noisy.high - noisy.low > 0
    assert bootstrap_mae_difference(np.ones(5), np.zeros(5), seed=4) == bootstrap_mae_difference(np.ones(5), np.zeros(5), seed=4)
    with pytest.raises(ValueError, match="aligned"):
        bootstrap_mae_difference(np.ones(3), np.ones(4))


def test_verdicts_follow_the_interval() -> None:
    below, across, above = Interval(-2, -3, -1, 3, "t"), Interval(0.1, -1, 1, 3, "t"), Interval(2, 1, 3, 3, "t")
    assert sign_verdict(below, "negative") == REPRODUCED
    assert sign_verdict(above, "negative") == CONTRADICTED
    assert sign_verdict(across, "negative") == INCONCLUSIVE
    assert sign_verdict(Interval(-2, math.nan, math.nan, 1, ""), "negative") == INCONCLUSIVE
    assert range_verdict(Interval(4, 3, 5, 3, "t"), 2, 8) == REPRODUCED
    assert range_verdict(Interval(20, 10, 30, 3, "t"), 2, 8) == CONTRADICTED
    assert range_verdict(Interval(6, 3, 12, 3, "t"), 2, 8) == INCONCLUSIVE
    assert combine_verdicts([REPRODUCED, REPRODUCED]) == REPRODUCED
    assert combine_verdicts([REPRODUCED, INCONCLUSIVE]) == INCONCLUSIVE
    assert combine_verdicts([REPRODUCED, CONTRADICTED, INCONCLUSIVE]) == CONTRADICTED
    assert combine_verdicts([]) == INCONCLUSIVE


def _run(experiment: str, strategy: str, seed: int, mae: float, **extra: object) -> dict[str, object]:
    row = {
        "run_id": f"{experiment}-{strategy}-{seed}-{extra.get('train_size', 100)}-{extra.get('profile', 'cpu')}",
        "kind": "transfer",
        "experiment": experiment,
        "profile": "cpu",
        "strategy": strategy,
        "source": "e_form_pbe",
        "target": "e_form_r2scan",
        "task_type": "intra",
        "seed": seed,
        "train_size": 100,
        "pretrain_size": 0 if strategy == "none" else 1000,
        "pretrain_run_id": None,
        "test_mae": mae,
    }
    row.update(extra)
    return row


def test_comparisons_pair_by_seed_pool_baselines_and_bootstrap_single_seeds() -> None:
    rows = []
    for seed, (none, full, head) in enumerate([(1.0, 0.8, 1.1), (1.2, 0.9, 1.0), (1.1, 0.85, 1.3)]):
        rows += [_run("intra", "none", seed, none), _run("intra", "full", seed, full), _run("intra", "head", seed, head)]
    # an inter-property experiment without its own baseline, one seed; and another profile's baseline
    rows.append(_run("inter", "full", 0, 1.5, source="volume_pbe", task_type="inter"))
    rows.append(_run("intra", "none", 0, 50.0, profile="other"))
    runs = pd.DataFrame(rows)
    table = comparison_table(runs)
    full_none = table[(table["experiment"] == "intra") & (table["a"] == "full") & (table["b"] == "none")].iloc[0]
    assert full_none["n"] == 3
    assert full_none["diff"] == pytest.approx(np.mean([-0.2, -0.3, -0.25]))
    assert full_none["diff_high"] < 0 and full_none["method"] == "t over seeds"
    # percent from each seed's own ratio, not the mean difference over the mean baseline
    ratios = [100 * (0.8 / 1.0 - 1), 100 * (0.9 / 1.2 - 1), 100 * (0.85 / 1.1 - 1)]
    assert full_none["pct"] == pytest.approx(np.mean(ratios)) != pytest.approx(100 * full_none["diff"] / 1.1)
    assert (full_none["pct_low"], full_none["pct_high"]) == pytest.approx((t_interval(ratios).low, t_interval(ratios).high))
    head_none = table[(table["experiment"] == "intra") & (table["a"] == "head") & (table["b"] == "none")].iloc[0]
    assert head_none["diff_low"] < 0 < head_none["diff_high"]
    inter = table[table["experiment"] == "inter"].iloc[0]
    # the baseline comes from the intra experiment of the same profile, not the other profile's 50.0
    assert inter["n"] == 1 and inter["mae_b"] == pytest.approx(1.0) and inter["method"] == "single seed, no interval"
    ids = [f"mp-{i}" for i in range(300)]
    rng = np.random.default_rng(0)
    base = pd.Series(np.abs(rng.normal(0, 1, 300)), index=ids)
    errors = {"inter-full-0-100-cpu": base + 0.5, "intra-none-0-100-cpu": base}
    inter = comparison_table(runs, errors)
    inter = inter[inter["experiment"] == "inter"].iloc[0]
    assert inter["method"] == "bootstrap over materials" and inter["diff_low"] == pytest.approx(0.5)


def _scaling_runs(noise: float, seeds: range, pretrain_sizes: tuple[int, ...] = (1000, 10000)) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    rows = []
    for seed in seeds:
        for n in (100, 300, 600, 1000):
            for n_pre in pretrain_sizes:
                mae = 2.0 * n**-0.3 * (n_pre / 1000) ** -0.1 * math.exp(noise * rng.normal())
                rows.append(_run("size", "full", seed, mae, train_size=n, pretrain_size=n_pre))
            rows.append(_run("size", "none", seed, 3.0 * n**-0.35 * math.exp(noise * rng.normal()), train_size=n))
    return pd.DataFrame(rows)


def test_slope_intervals_come_from_one_line_per_seed() -> None:
    runs = _scaling_runs(0.05, range(5))
    fits = fit_table(size_points(runs), runs)
    line = fits[(fits["x"] == "train_size") & (fits["strategy"] == "full") & (fits["pretrain_size"] == 1000)].iloc[0]
    slopes = seed_slopes(runs, "train_size", {"experiment": "size", "strategy": "full", "pretrain_size": 1000})
    assert sorted(slopes) == [0, 1, 2, 3, 4]
    expected = t_interval(list(slopes.values()))
    assert (line["slope_low"], line["slope_high"]) == pytest.approx((expected.low, expected.high))
    assert line["n_seed_fits"] == 5 and line["slope_low"] < -0.3 < line["slope_high"]


def test_claims_table_gives_one_verdict_per_claim_from_the_intervals() -> None:
    runs = _scaling_runs(0.02, range(4))
    fits = fit_table(size_points(runs), runs)
    claims = claims_table(runs, comparison_table(runs), fits)
    verdicts = claim_verdicts(claims).set_index("claim_id")["verdict"]
    assert verdicts["full_beats_none"] == REPRODUCED  # 2 * ... * 10**-0.1 is far below 3 * N**-0.35
    assert verdicts["loglog_train"] == REPRODUCED  # four training sizes, a power law: no lack of fit
    assert verdicts["loglog_pretrain"] == INCONCLUSIVE  # two pre-training sizes cannot show linearity
    pretrain_lines = claims[claims["claim_id"] == "loglog_pretrain"]
    assert pretrain_lines["detail"].str.startswith("linearity needs at least 4 sizes (the slope alone: reproduced)").all()
    assert verdicts["similar_slopes"] == REPRODUCED  # the generating slopes are equal
    assert verdicts["head_worse_gaps"] == INCONCLUSIVE  # nothing measured: said so, never reproduced
    missing = claims[claims["claim_id"] == "head_worse_gaps"].iloc[0]
    assert missing["measured"] == "not measured" and missing["detail"]
    # flip the data: no transfer now wins, so the same claim is contradicted
    flipped = runs.copy()
    flipped.loc[flipped["strategy"] == "none", "test_mae"] *= 0.01
    claims = claims_table(flipped, comparison_table(flipped), fit_table(size_points(flipped), flipped))
    assert claim_verdicts(claims).set_index("claim_id").loc["full_beats_none", "verdict"] == CONTRADICTED


def test_a_curved_line_contradicts_falling_linearly_whatever_its_slope() -> None:
    rng = np.random.default_rng(3)
    rows = [
        _run("size", "none", seed, (1.0 if n <= 300 else 0.3) * math.exp(0.01 * rng.normal()), train_size=n)
        for seed in range(3) for n in (100, 200, 300, 1000)
    ]  # fmt: skip
    runs = pd.DataFrame(rows)
    claims = claims_table(runs, comparison_table(runs), fit_table(size_points(runs), runs))
    line = claims[claims["claim_id"] == "loglog_train"].iloc[0]
    assert line["verdict"] == CONTRADICTED and line["detail"].startswith("curved")
    assert line["p_value"] < 1e-6  # the lack-of-fit p-value, in the claim's Holm family


def test_holm_keeps_only_the_contradictions_that_survive_the_family() -> None:
    from benchmarks.report.claims import holm
    from benchmarks.report.statistics import holm_rejected, p_value

    assert holm_rejected([0.01, 0.04, 0.03, math.nan]) == [True, False, False, False]  # 0.01 < 0.05/3; 0.03 > 0.05/2
    assert holm_rejected([0.001, 0.012, 0.02]) == [True, True, True]
    # the p-value of a t-interval over seeds is the one of its t statistic
    values = [0.3, 0.5, 0.4, 0.6]
    assert p_value(t_interval(values)) == pytest.approx(stats.ttest_1samp(values, 0.0).pvalue)
    row = lambda verdict, p: {"claim_id": "full_beats_none", "verdict": verdict, "p_value": p, "detail": "x"}  # noqa: E731
    rows = holm([row(CONTRADICTED, 0.03), row(CONTRADICTED, 0.001), row(REPRODUCED, 0.04), row(INCONCLUSIVE, 0.5)])
    assert [r["verdict"] for r in rows] == [INCONCLUSIVE, CONTRADICTED, REPRODUCED, INCONCLUSIVE]
    assert rows[0]["detail"].startswith("contradicted at 95 % alone, not after Holm's correction over the claim's 4 checks")


def test_budget_claim_checks_the_break_even_interval() -> None:
    runs = _scaling_runs(0.02, range(3))
    fits = fit_table(size_points(runs), runs)
    budget = pd.DataFrame(
        [
            {"experiment": "size", "train_size": 100, "pretrain_size": 1000, "ratio": 10.0, "break_even": 4.2, "break_even_seed_mean": 4.1,
             "break_even_low": 3.0, "break_even_high": 6.0, "n_seeds": 3, "better_first_step": "low-fidelity"},
            {"experiment": "size", "train_size": 1000, "pretrain_size": 1000, "ratio": 1.0, "break_even": 30.0, "break_even_seed_mean": 29.0,
             "break_even_low": 20.0, "break_even_high": 45.0, "n_seeds": 3, "better_first_step": "low-fidelity"},
        ]
    )  # fmt: skip
    claims = claims_table(runs, comparison_table(runs), fits, budget=budget)
    checks = claims[claims["claim_id"] == "budget_balance"]
    # two pre-training sizes: the lines over pre-training size cannot pass the linearity test
    assert checks["verdict"].tolist() == [INCONCLUSIVE, INCONCLUSIVE]
    assert checks["detail"].str.startswith("a line fails the linearity test (4+ sizes, no lack of fit; the interval alone: ").all()
    runs = _scaling_runs(0.02, range(3), pretrain_sizes=(1000, 2000, 5000, 10000))
    claims = claims_table(runs, comparison_table(runs), fit_table(size_points(runs), runs), budget=budget)
    checks = claims[claims["claim_id"] == "budget_balance"]
    assert checks["verdict"].tolist() == [REPRODUCED, CONTRADICTED]


def test_the_tuning_claim_needs_every_trial_stopped_on_a_plateau() -> None:
    runs = pd.DataFrame([_run("inter", "full", 0, 1.0, source="volume_pbe", task_type="inter", stop_reason="plateau")])
    trials = pd.DataFrame(
        [
            {"study": "grid", "run_id": f"t{i}", "experiment": "inter", "strategy": "full", "task_type": "inter",
             "train_size": 100, "seed": 0, "lr": lr, "weight_decay": 1e-3, "objective": objective,
             "test_mae": mae, "stop_reason": "plateau"}
            for i, (lr, objective, mae) in enumerate([(1e-5, 0.9, 1.2), (1e-6, 1.1, 1.4)])
        ]
    )  # fmt: skip

    def check(frame: pd.DataFrame) -> pd.Series:
        claims = claims_table(runs, comparison_table(runs), fit_table(size_points(runs), runs), studies=frame)
        return claims[claims["claim_id"] == "lr_wd_no_gain"].iloc[0]

    # the best trial by validation MAE is 0.2 worse on test than the default: a verdict from the interval
    assert check(trials)["verdict"] != NOT_CONVERGED
    capped = trials.assign(stop_reason=["plateau", "cap"])
    row = check(capped)
    assert row["verdict"] == NOT_CONVERGED and "1 of 2 trials did not stop on a validation plateau" in row["detail"]


def test_a_grid_whose_best_trial_is_the_default_is_judged_on_its_other_settings() -> None:
    runs = pd.DataFrame([_run("inter", "full", 0, 1.0, source="volume_pbe", task_type="inter", stop_reason="plateau")])
    ids = [f"mp-{i}" for i in range(60)]
    spread = np.random.default_rng(5).exponential(0.3, 60)
    trials = pd.DataFrame(
        [
            {"study": "grid", "run_id": f"t{i}", "experiment": "inter", "strategy": "full", "task_type": "inter",
             "train_size": 100, "seed": 0, "lr": lr, "weight_decay": 0.0, "objective": objective,
             "test_mae": mae, "stop_reason": "plateau"}
            for i, (lr, objective, mae) in enumerate([(1e-4, 0.8, 1.0), (1e-5, 0.9, 1.3), (1e-6, 1.1, 1.5)])
        ]
    )  # fmt: skip
    errors = {run_id: pd.Series(mae + spread - spread.mean(), index=ids)
              for run_id, mae in [(str(runs["run_id"].iloc[0]), 1.0), ("t0", 1.0), ("t1", 1.3), ("t2", 1.5)]}
    claims = claims_table(runs, comparison_table(runs), fit_table(size_points(runs), runs), studies=trials, errors=errors)
    row = claims[claims["claim_id"] == "lr_wd_no_gain"].iloc[0]
    # the best trial is the default model itself (+0 [+0, +0] would say nothing): the best other setting is measured
    assert "the best of 3 trials is the default" in row["check"] and "lr 1e-05" in row["check"]
    assert row["mean"] == pytest.approx(0.3) and row["verdict"] == REPRODUCED


def test_parse_seeds() -> None:
    assert parse_seeds("0-2") == [0, 1, 2]
    assert parse_seeds("3,5,4") == [3, 4, 5]
    assert parse_seeds("0-1,4") == [0, 1, 4]
    assert parse_seeds(None) is None
    for bad in ("a", "3-1", "-1", ","):
        with pytest.raises(ValueError, match="--seeds"):
            parse_seeds(bad)


def test_runs_of_two_splits_pair_by_split_and_seed() -> None:
    from benchmarks.report.writer import SPLIT_STRIDE, _replicates
    from benchmarks.report.markdown import MarkdownReport

    rows = []
    for split in (0, 1):
        for seed in (0, 1):
            rows += [
                _run("intra", "none", seed, 1.0 + 0.1 * split + 0.01 * seed, split_seed=split),
                _run("intra", "full", seed, 0.8 + 0.1 * split + 0.01 * seed, split_seed=split),
            ]
    for row in rows:
        row["run_id"] += f"-split{row['split_seed']}"
    report = MarkdownReport("t", Path("."))
    runs = _replicates(pd.DataFrame(rows), report)
    assert sorted(runs["seed"].unique()) == [0, 1, SPLIT_STRIDE, SPLIT_STRIDE + 1]
    assert any("2 splits" in block for block in report.blocks)
    row = comparison_table(runs).query("a == 'full' and b == 'none'").iloc[0]
    assert row["n"] == 4 and row["diff"] == pytest.approx(-0.2)
    single = _replicates(pd.DataFrame(rows[:4]), MarkdownReport("t", Path(".")))
    assert sorted(single["seed"].unique()) == [0, 1]  # one split: seeds unchanged


def test_the_hierarchical_bootstrap_covers_seeds_and_test_materials() -> None:
    from benchmarks.report.statistics import HIERARCHICAL, hierarchical_difference

    rng = np.random.default_rng(0)
    materials = 3.0 + rng.exponential(1.0, 300)  # positive under the noise below; one test set for every seed
    seeds = {s: materials + 0.05 * s for s in range(4)}
    # b equals a up to a material-level difference the same on every seed: the seeds add no variance
    interval, shares = hierarchical_difference({s: e + 0.1 for s, e in seeds.items()}, seeds)
    assert interval.method == HIERARCHICAL and interval.mean == pytest.approx(0.1)
    assert interval.low == pytest.approx(0.1) and interval.high == pytest.approx(0.1)  # no spread at all
    # material noise in the difference, none between seeds: the materials carry the variance
    noise = rng.normal(0, 0.5, 300)
    interval, shares = hierarchical_difference({s: e + noise for s, e in seeds.items()}, seeds)
    assert shares.materials > 0.9 and interval.low < noise.mean() < interval.high
    t_over_seeds = t_interval([noise.mean()] * 4)
    assert t_over_seeds.high == t_over_seeds.low  # a t-interval over seeds alone would claim certainty
    # seed offsets, no material noise: the seeds carry it
    interval, shares = hierarchical_difference({s: e + 0.2 * s for s, e in seeds.items()}, seeds)
    assert shares.seeds > 0.9


def test_the_nested_bootstrap_covers_splits_and_pretrained_models() -> None:
    from benchmarks.report.statistics import HIERARCHICAL, NESTED, hierarchical_difference, nested_difference

    rng = np.random.default_rng(0)
    noise = {split: rng.normal(0, 0.05, 200) for split in (0, 1, 2)}  # each split its own test set

    def differences(split_offset: float, model_offset: float) -> dict:
        return {(g, m, s): 0.1 + split_offset * g + model_offset * m + 0.001 * s + noise[g]
                for g in (0, 1, 2) for m in (0, 1, 2) for s in (0, 1, 2)}

    interval, shares = nested_difference(differences(0.2, 0.0))
    assert interval.method == NESTED and interval.n == 27
    assert interval.mean == pytest.approx(0.1 + 0.2 + 0.001 + np.mean([noise[g].mean() for g in (0, 1, 2)]))
    assert shares.splits > 0.9 and interval.low < interval.mean < interval.high
    interval, shares = nested_difference(differences(0.0, 0.2))
    assert shares.models > 0.9
    # the splits' spread is in the interval: far wider than seeds and materials alone give
    split_only, _ = nested_difference(differences(0.2, 0.0))
    one_split = {key: value for key, value in differences(0.2, 0.0).items() if key[0] == 0}
    narrow, _ = nested_difference(one_split)
    assert split_only.high - split_only.low > 5 * (narrow.high - narrow.low)
    # one split and one model: the two-level bootstrap, same numbers
    single = {(0, None, s): noise[0] + 0.01 * s for s in range(3)}
    interval, shares = nested_difference(single)
    reference, reference_shares = hierarchical_difference({s: noise[0] + 0.01 * s + 5 for s in range(3)},
                                                           {s: np.full(200, 5.0) for s in range(3)})
    assert interval.method == HIERARCHICAL and interval.low == pytest.approx(reference.low)
    assert shares.seeds == pytest.approx(reference_shares.seeds) and math.isnan(shares.models)


def test_comparisons_over_two_pretrained_models_pair_no_transfer_with_each() -> None:
    from benchmarks.report.statistics import NESTED

    rows = []
    for seed in range(3):
        rows.append(_run("intra", "none", seed, 1.0 + 0.05 * seed, split_seed=0, pretrain_seed=-1))
        for model in (0, 1):
            rows.append(_run("intra", "full", seed, 0.8 + 0.1 * model, split_seed=0, pretrain_seed=model,
                             run_id=f"full-{seed}-{model}"))
    runs = pd.DataFrame(rows)
    ids = [f"mp-{i}" for i in range(60)]
    rng = np.random.default_rng(2)
    errors = {str(r["run_id"]): pd.Series(r["test_mae"] + rng.normal(0, 0.05, 60), index=ids).abs() for r in rows}
    row = comparison_table(runs, errors).query("a == 'full' and b == 'none'").iloc[0]
    assert row["method"] == NESTED and row["n"] == 6  # 2 models x 3 seeds, each with its seed's no-transfer run
    assert row["diff"] == pytest.approx(-0.2, abs=0.03)
    assert math.isnan(row["share_splits"]) and row["share_models"] > 0.5  # one split: not a level here


def _replicated_runs() -> list[dict[str, object]]:
    """No transfer and full transfer over 2 splits, 2 pre-trained models on split 0 and 1 on split 1, 3
    seeds each: the models differ by 0.2 on split 0, the seeds by 0.001."""
    rows = []
    for split, models in ((0, (0, 1)), (1, (0,))):
        for seed in range(3):
            replicate = split * 1000 + seed  # as the report numbers the seeds of several splits
            rows.append(_run("intra", "none", replicate, 1.0 + 0.001 * seed, split_seed=split, pretrain_seed=-1,
                             run_id=f"none-{split}-{seed}"))
            for model in models:
                rows.append(_run("intra", "full", replicate, 0.6 + 0.2 * model + 0.001 * seed, split_seed=split,
                                 pretrain_seed=model, run_id=f"full-{split}-{model}-{seed}"))
    return rows


def test_percentages_and_means_over_replicates_weigh_each_level_once() -> None:
    runs = pd.DataFrame(_replicated_runs())
    row = comparison_table(runs).query("a == 'full' and b == 'none'").iloc[0]
    assert row["n"] == 9 and row["method"].startswith("bootstrap over splits")
    # split 0: the mean of its two models (0.6, 0.8); split 1: its one model (0.6); then over the splits
    assert row["mae_a"] == pytest.approx((0.7 + 0.6) / 2 + 0.001)
    assert row["mae_a"] - row["mae_b"] == pytest.approx(row["diff"])
    ratios_split0 = [100 * (0.6 / 1.0 - 1), 100 * (0.8 / 1.0 - 1)]
    assert row["pct"] == pytest.approx((np.mean(ratios_split0) + 100 * (0.6 / 1.0 - 1)) / 2, abs=0.2)
    # the models' spread is in the percent interval: a t-interval over seed-averaged ratios would be
    # about 100 times narrower (the seeds differ by 0.001)
    assert row["pct_high"] - row["pct_low"] > 5.0
    assert row["share_models"] + row["share_splits"] > 0.99 and row["pct_low"] < row["pct"] < row["pct_high"]


def test_table1_cells_over_splits_and_models_take_the_nested_interval() -> None:
    from benchmarks.report.tables import table1

    runs = pd.DataFrame(_replicated_runs())
    table = table1(runs).set_index("strategy")
    full, none = table.loc["full"], table.loc["none"]
    assert full["n_seeds"] == 9 and full["mae_mean"] == pytest.approx((0.7 + 0.6) / 2 + 0.001)
    assert full["mae_low"] < full["mae_mean"] < full["mae_high"]
    assert full["share_models"] + full["share_splits"] > 0.99 and math.isnan(full["share_materials"])  # no predictions
    assert math.isnan(none["share_models"]) and none["mae_mean"] == pytest.approx(1.001)
    one = runs[(runs["split_seed"] == 0) & (runs["pretrain_seed"] <= 0)]
    one_model = table1(one).set_index("strategy")
    assert math.isnan(one_model.loc["full", "share_seeds"])  # one split, one model: the t-interval over seeds
    assert one_model.loc["full", "mae_mean"] == pytest.approx(0.601) and one_model.loc["full", "interval"] == "t over seeds"
    # with every run's predictions the test materials are a level too, on one split as on several
    ids = [f"mp-{i}" for i in range(80)]
    hardness = np.random.default_rng(4).exponential(0.3, 80)  # some materials are hard for every model
    errors = {str(r["run_id"]): pd.Series(r["test_mae"] + hardness, index=ids) for _, r in runs.iterrows()}
    with_materials = table1(one, errors).set_index("strategy").loc["full"]
    assert with_materials["interval"] == "bootstrap over seeds × test materials" and with_materials["share_materials"] > 0.9
    assert with_materials["mae_high"] - with_materials["mae_low"] > 5 * (one_model.loc["full", "mae_high"] - one_model.loc["full", "mae_low"])
    nested = table1(runs, errors).set_index("strategy").loc["full"]
    assert nested["interval"].startswith("bootstrap over splits") and nested["interval"].endswith("test materials")


def test_claims_name_each_levels_share_of_the_variance() -> None:
    rows = _replicated_runs()
    runs = pd.DataFrame(rows)
    ids = [f"mp-{i}" for i in range(40)]
    rng = np.random.default_rng(3)
    errors = {str(r["run_id"]): pd.Series(r["test_mae"] + rng.normal(0, 0.02, 40), index=ids).abs() for r in rows}
    comparisons = comparison_table(runs, errors)
    claims = claims_table(runs, comparisons, fit_table(size_points(runs), runs), errors=errors)
    detail = claims[claims["claim_id"] == "full_beats_none"].iloc[0]["detail"]
    assert "variance: splits" in detail and "models" in detail and "materials" in detail


def test_comparisons_use_seeds_and_materials_where_every_run_logged_its_predictions() -> None:
    rows = []
    for seed, (none, full) in enumerate([(1.0, 0.8), (1.2, 0.9), (1.1, 0.85)]):
        rows += [_run("intra", "none", seed, none), _run("intra", "full", seed, full)]
    runs = pd.DataFrame(rows)
    ids = [f"mp-{i}" for i in range(50)]
    rng = np.random.default_rng(1)
    errors = {str(r["run_id"]): pd.Series(r["test_mae"] + rng.normal(0, 0.3, 50), index=ids).abs() for r in rows}
    row = comparison_table(runs, errors).iloc[0]
    assert row["method"] == "bootstrap over seeds × test materials"
    assert 0 <= row["share_seeds"] <= 1 and row["share_seeds"] + row["share_materials"] == pytest.approx(1)
    errors.pop(str(rows[0]["run_id"]))  # one run without predictions: seeds only
    assert comparison_table(runs, errors).iloc[0]["method"] == "t over seeds"


def test_one_seed_on_a_handful_of_test_materials_is_never_a_verdict() -> None:
    rows = [_run("intra", "none", 0, 1.0), _run("intra", "full", 0, 1.97)]
    runs = pd.DataFrame(rows)

    def check(materials: int) -> pd.Series:
        ids = [f"mp-{i}" for i in range(materials)]
        spread = np.linspace(-0.01, 0.01, materials)
        errors = {str(r["run_id"]): pd.Series(r["test_mae"] + spread, index=ids) for r in rows}
        claims = claims_table(runs, comparison_table(runs, errors), fit_table(size_points(runs), runs), errors=errors)
        return claims[claims["claim_id"] == "full_beats_none"].iloc[0]

    thin = check(3)  # full - none = +97 % with a razor-thin interval over 3 materials
    assert thin["verdict"] == "inconclusive"
    assert thin["detail"].startswith("too little evidence: one seed and 3 test materials")
    assert "the interval alone: contradicted" in thin["detail"]
    assert check(40)["verdict"] == "contradicted"  # 40 materials: the interval may speak
