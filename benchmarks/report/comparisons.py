"""Paired comparisons of strategies: the difference of test MAEs over the same seeds and split.

For a pair (a, b) at one experiment, metric and training size, the difference MAE(a) - MAE(b) is
taken seed by seed (a seed fixes the initialisation and batch order; the split is the same). Where every
run logged its per-material predictions, its 95 % interval is a two-level bootstrap over the seeds and
the test materials (a claim is about new materials as much as new seeds), with each level's share of
the variance; runs over several splits or pre-trained models (pre-training seeds) add those levels
(a nested bootstrap: splits, models within a split, seeds within a model, each split's own test
materials); otherwise a t-interval over the seeds. A cell with a single common seed gets a bootstrap
over the test materials (both runs were scored on the same materials). Negative: a is better.
The difference in percent of b is the mean of the seeds' own ratios 100 × (a / b − 1), with its
t-interval, so that b's spread over seeds is in it.
The runs of strategies that depend on the target alone (no transfer, the training median, the
composition baseline) are pooled over the experiments that share the target: they fit the same model
to the same data, so an inter-property experiment is compared with the intra-property one's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from benchmarks.report.replicates import (
    errors_by_replicate,
    level_mean,
    matched,
    nested_percent,
    nested_run_difference,
    on_common_materials,
    spans_levels,
    values_by_replicate,
)
from benchmarks.report.statistics import (
    UNKNOWN_SHARES,
    Interval,
    Shares,
    bootstrap_mae_difference,
    hierarchical_difference,
    nested_difference,
    paired_difference,
    ratio_percent,
    relative,
    unknown,
)
from benchmarks.report.tables import subset_metrics, target_only_strategies, transfer_runs
from cgat_dgl.strategies import REGISTRY


def pairs() -> tuple[tuple[str, str], ...]:
    """(a, b): a − b on the same replicates, for each strategy and those its entry is compared with."""
    return tuple((name, other) for name, spec in REGISTRY.items() for other in spec.compared_with)

COMPARISON_COLUMNS = (
    "experiment",
    "task_type",
    "source",
    "target",
    "metric",
    "train_size",
    "pretrain_size",
    "pretrain_size_b",  # b's: a joint strategy's source pool need not equal full transfer's pre-training size
    "a",
    "b",
    "n",
    "mae_a",
    "mae_b",
    "diff",
    "diff_low",
    "diff_high",
    "pct",
    "pct_low",
    "pct_high",
    "method",
    # of the difference's bootstrap variance: from the splits, the pre-trained models, the transfer seeds
    # and the test materials (NaN: a level the runs do not vary)
    "share_splits",
    "share_models",
    "share_seeds",
    "share_materials",
    "run_ids",  # the runs the difference rests on (both cells, common seeds), space-separated
)


def by_seed(runs: pd.DataFrame, metric: str = "test_mae") -> dict[int, float]:
    """{seed: mean of ``metric``} over the runs (several runs of one seed are averaged)."""
    values = runs.dropna(subset=[metric]).groupby("seed")[metric].mean()
    return {int(seed): float(value) for seed, value in values.items()}


def paired_run_ids(a: pd.DataFrame, b: pd.DataFrame, metric: str = "test_mae") -> list[str]:
    """The runs a paired difference of ``a`` and ``b`` rests on: those of the seeds both have a value for."""
    seeds = set(by_seed(a, metric)) & set(by_seed(b, metric))
    both = pd.concat([a, b])
    return both.loc[both["seed"].isin(seeds) & both[metric].notna(), "run_id"].astype(str).tolist()


def _mean_errors(group: pd.DataFrame, errors: Mapping[str, pd.Series]) -> pd.Series | None:
    """Absolute test error per material, averaged over the group's runs; None when one logged no predictions."""
    ids = [str(r) for r in group["run_id"]]
    if any(run_id not in errors for run_id in ids):
        return None
    return pd.concat([errors[run_id].abs() for run_id in ids], axis=1).mean(axis=1)


def _errors_by_seed(runs: pd.DataFrame, errors: Mapping[str, pd.Series]) -> dict[int, pd.Series] | None:
    """Seed -> absolute test error per material (several runs of one seed averaged); None when a run
    logged no predictions."""
    out: dict[int, pd.Series] = {}
    for seed, group in runs.groupby("seed"):
        found = _mean_errors(group, errors)
        if found is None:
            return None
        out[int(seed)] = found
    return out


def _nested(a_runs: pd.DataFrame, b_runs: pd.DataFrame, errors: Mapping[str, pd.Series]) -> tuple[Interval, Shares] | None:
    """The difference over splits, pre-trained models, seeds and test materials (``nested_difference``),
    each replicate of a paired with b's (``replicates.matched``)."""
    errors_a, errors_b = errors_by_replicate(a_runs, errors), errors_by_replicate(b_runs, errors)
    if errors_a is None or errors_b is None:
        return None
    pairs = matched(errors_a, errors_b)
    if not pairs:
        return None
    return nested_difference({key: a - b for key, (a, b) in on_common_materials(pairs).items()})


def _difference(
    a_runs: pd.DataFrame,
    b_runs: pd.DataFrame,
    a: dict[int, float],
    b: dict[int, float],
    metric: str,
    errors: Mapping[str, pd.Series] | None,
) -> tuple[Interval, Shares]:
    """The paired difference: over seeds and test materials where every run logged its predictions
    (both are sources of variation of a claim about new materials), else a t-interval over seeds; one
    common seed: a bootstrap over its test materials."""
    none = UNKNOWN_SHARES
    common = sorted(set(a) & set(b))
    if not common:
        return paired_difference(a, b), none
    if spans_levels(a_runs, b_runs):
        nested = _nested(a_runs, b_runs, errors) if metric == "test_mae" and errors is not None else None
        return nested if nested is not None else nested_run_difference(a_runs, b_runs, metric)
    if metric != "test_mae" or errors is None:
        return paired_difference(a, b), none
    errors_a, errors_b = _errors_by_seed(a_runs[a_runs["seed"].isin(common)], errors), _errors_by_seed(b_runs[b_runs["seed"].isin(common)], errors)
    if errors_a is None or errors_b is None:
        return (paired_difference(a, b) if len(common) > 1 else unknown(a[common[0]] - b[common[0]], 1)), none
    materials = sorted(set.intersection(*(set(e.index) for e in [*errors_a.values(), *errors_b.values()])))
    if len(common) == 1:
        seed = common[0]
        interval = bootstrap_mae_difference(errors_a[seed].loc[materials].to_numpy(), errors_b[seed].loc[materials].to_numpy(), seed=seed)
        return interval, none
    return hierarchical_difference(
        {s: errors_a[s].loc[materials].to_numpy() for s in common}, {s: errors_b[s].loc[materials].to_numpy() for s in common}
    )


def _means(a_runs: pd.DataFrame, b_runs: pd.DataFrame, by_a: dict[int, float], by_b: dict[int, float],
           metric: str) -> tuple[float, float]:
    """a's and b's MAE over the replicates the difference is taken on, so that they subtract to it: level
    by level where the runs span several splits or pre-trained models, else over the common seeds."""
    if spans_levels(a_runs, b_runs):
        pairs = matched(values_by_replicate(a_runs, metric), values_by_replicate(b_runs, metric))
        return (level_mean({key: a for key, (a, _) in pairs.items()}),
                level_mean({key: b for key, (_, b) in pairs.items()}))
    common = sorted(set(by_a) & set(by_b))
    if not common:
        return math.nan, math.nan
    return sum(by_a[s] for s in common) / len(common), sum(by_b[s] for s in common) / len(common)


def comparison_table(runs: pd.DataFrame, errors: Mapping[str, pd.Series] | None = None) -> pd.DataFrame:
    """Every pair of ``pairs()`` present at each experiment, metric and training size; transfers at the
    experiment's largest pre-training size."""
    transfer = transfer_runs(runs)
    target_only = target_only_strategies()
    pooled = transfer[transfer["strategy"].isin(target_only)].drop_duplicates("run_id")  # a shared run once
    rows: list[dict[str, object]] = []
    for experiment, exp_runs in transfer.groupby("experiment", sort=True):
        transferred = exp_runs[~exp_runs["strategy"].isin(target_only)]
        target = str(exp_runs["target"].iloc[0])
        first = (transferred if len(transferred) else exp_runs).iloc[0]
        for train_size in sorted(exp_runs["train_size"].unique()):
            at_size = exp_runs[exp_runs["train_size"] == train_size]
            cells: dict[str, pd.DataFrame] = {}
            for strategy, group in at_size[~at_size["strategy"].isin(target_only)].groupby("strategy"):
                cells[str(strategy)] = group[group["pretrain_size"] == group["pretrain_size"].max()]
            shared = pooled[
                (pooled["target"] == target)
                & (pooled["train_size"] == train_size)
                & (pooled["profile"].fillna("") == (first["profile"] or ""))
            ]
            for strategy, group in shared.groupby("strategy"):
                cells[str(strategy)] = group
            for metric in ["test_mae", *subset_metrics(at_size)]:
                for a, b in pairs():
                    if a not in cells or b not in cells:
                        continue
                    by_a, by_b = by_seed(cells[a], metric), by_seed(cells[b], metric)
                    diff, shares = _difference(cells[a], cells[b], by_a, by_b, metric, errors)
                    common = sorted(set(by_a) & set(by_b))
                    mae_a, mae_b = _means(cells[a], cells[b], by_a, by_b, metric)
                    if spans_levels(cells[a], cells[b]):
                        pct = nested_percent(cells[a], cells[b], metric)
                    else:  # percent of b from each seed's own ratio; one seed: the bootstrap difference over b
                        pct = ratio_percent(by_a, by_b) if len(common) >= 2 else relative(diff, mae_b)
                    pretrain = cells[a] if a not in target_only else cells[b]
                    rows.append(
                        {
                            "experiment": experiment,
                            "task_type": first["task_type"],
                            "source": first["source"],
                            "target": target,
                            "metric": metric,
                            "train_size": int(train_size),
                            "pretrain_size": int(pretrain["pretrain_size"].max()),
                            "pretrain_size_b": int(cells[b]["pretrain_size"].max()) if b not in target_only else 0,
                            "a": a,
                            "b": b,
                            "n": diff.n,
                            "mae_a": mae_a,
                            "mae_b": mae_b,
                            "diff": diff.mean,
                            "diff_low": diff.low,
                            "diff_high": diff.high,
                            "pct": pct.mean,
                            "pct_low": pct.low,
                            "pct_high": pct.high,
                            "method": diff.method or ("single seed, no interval" if diff.n == 1 else "no common seed"),
                            "share_splits": shares.splits,
                            "share_models": shares.models,
                            "share_seeds": shares.seeds,
                            "share_materials": shares.materials,
                            "run_ids": " ".join(paired_run_ids(cells[a], cells[b], metric)),
                        }
                    )
    return pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))


def interval_of(row: pd.Series | object) -> Interval:
    """The difference interval stored in a comparison row."""
    get = row.__getitem__ if isinstance(row, pd.Series) else lambda name: getattr(row, name)
    return Interval(float(get("diff")), float(get("diff_low")), float(get("diff_high")), int(get("n")), str(get("method")))


def fmt_interval(mean: float, low: float, high: float, digits: int = 3, unit: str = "") -> str:
    if not math.isfinite(mean):
        return "n/a"
    text = f"{mean:+.{digits}g}{unit}"
    if math.isfinite(low) and math.isfinite(high):
        text += f" [{low:+.{digits}g}, {high:+.{digits}g}]{unit}"
    return text
