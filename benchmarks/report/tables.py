"""Summary tables built from the runs frame: Table 1 and intra- against inter-property transfer."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from benchmarks.report.collect import SUBSET_PREFIX
from benchmarks.report.statistics import t_interval
from cgat_dgl.strategies import REGISTRY, STRATEGIES, names

STRATEGY_LABELS = {"pretrain": "pre-training (source)", **{name: spec.label for name, spec in REGISTRY.items()}}
# Strategies that start from a pre-training run's weights: their pretrain_size is that run's size.
PRETRAINED_STRATEGIES = names(starts_from="pretrain")
# Strategies trained jointly on source and target data: their pretrain_size is the source pool they
# draw from, which need not be any pre-training run's size, so they are taken at their own largest.
JOINT_STRATEGIES = names(multifidelity=True)
# Strategies that add a material's computed source value to their prediction (marked †).
NEEDS_SOURCE_VALUE = names(needs_source_value=True)
# delta_known adds the material's known source value (e.g. its PBE gap) to its prediction: it cannot
# predict a material whose source value has not been computed, unlike every other strategy.
DELTA_KNOWN_NOTE = (
    "delta learning (known source value) predicts target − source value and adds the material's known "
    "source value back: it needs the source (e.g. PBE) value of every material it predicts, so it only "
    "applies where that calculation has been done"
)
JOINT_NOTE = (
    "multi-fidelity: N pretrain is the source pool the joint model draws from; each epoch sees every "
    "target training structure and source_ratio times as many source structures drawn from that pool"
)
TABLE1_COLUMNS = (
    "experiment",
    "task_type",
    "source",
    "target",
    "metric",
    "strategy",
    "property",
    "train_size",
    "pretrain_size",
    "mae_mean",
    "mae_std",
    "mae_low",
    "mae_high",
    "n_seeds",
    "improvement_pct",
    "improvement_std_pct",
)
INTRA_INTER_COLUMNS = (
    "target",
    "source",
    "task_type",
    "strategy",
    "train_size",
    "pretrain_size",
    "mae_mean",
    "mae_std",
    "n_seeds",
    "none_mae_mean",
    "improvement_pct",
)


def transfer_runs(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[runs["kind"] == "transfer"]


def ordered_strategies(present: Iterable[str]) -> list[str]:
    """Known strategies in their natural order, then any others alphabetically."""
    present = set(present)
    return [s for s in STRATEGIES if s in present] + sorted(present - set(STRATEGIES))


def subset_metrics(runs: pd.DataFrame) -> list[str]:
    return sorted(c for c in runs.columns if c.startswith(SUBSET_PREFIX) and runs[c].notna().any())


def _mode(values: pd.Series) -> str:
    values = values.dropna()
    return str(values.mode().iloc[0]) if len(values) else ""


def improvement(mean: float, std: float, base_mean: float, base_std: float) -> tuple[float, float]:
    """Percent reduction of the MAE relative to no transfer, and its spread propagated from the seeds."""
    if not (math.isfinite(mean) and math.isfinite(base_mean)) or base_mean <= 0:
        return math.nan, math.nan
    pct = 100.0 * (1.0 - mean / base_mean)
    spread = 100.0 * math.hypot(std / base_mean, mean * base_std / base_mean**2)
    return pct, spread


def largest_sizes(experiment_runs: pd.DataFrame) -> tuple[int, int]:
    """The largest training size of an experiment and the largest pre-training size of its transfers
    that start from pre-trained weights (of any transfer when none of those ran)."""
    transferred = experiment_runs[experiment_runs["strategy"] != "none"]
    pretrained = transferred[transferred["strategy"].isin(PRETRAINED_STRATEGIES)]
    # a joint strategy's source pool may exceed every pre-training size: it must not hide full transfer
    sized = pretrained if len(pretrained) else transferred
    n_train = int(experiment_runs["train_size"].max())
    n_pretrain = int(sized["pretrain_size"].max()) if len(sized) else 0
    return n_train, n_pretrain


def select_largest(experiment_runs: pd.DataFrame) -> pd.DataFrame:
    """Runs at the experiment's largest training size and, for transfers, largest pre-training size
    (joint strategies: the largest source pool each of them ran with)."""
    n_train, n_pretrain = largest_sizes(experiment_runs)
    at_train = experiment_runs["train_size"] == n_train
    strategy = experiment_runs["strategy"]
    joint = strategy.isin(JOINT_STRATEGIES)
    own_largest = experiment_runs.groupby("strategy")["pretrain_size"].transform("max")
    at_pretrain = (
        (strategy == "none")
        | (~joint & (experiment_runs["pretrain_size"] == n_pretrain))
        | (joint & (experiment_runs["pretrain_size"] == own_largest))
    )
    return experiment_runs[at_train & at_pretrain]


def pretrain_runs_for(runs: pd.DataFrame, transfers: pd.DataFrame, source: str, n_pretrain: int) -> pd.DataFrame:
    """The pre-training runs the given transfers started from: by linked run id, else by source and size."""
    pretrain = runs[runs["kind"] == "pretrain"]
    linked_ids = set(transfers["pretrain_run_id"].dropna())
    linked = pretrain[pretrain["run_id"].isin(linked_ids)]
    if len(linked):
        return linked
    return pretrain[(pretrain["target"] == source) & (pretrain["train_size"] == n_pretrain)]


def _stats(values: pd.Series) -> tuple[float, float, int]:
    values = values.dropna().astype(float)
    if values.empty:
        return math.nan, math.nan, 0
    std = float(values.std(ddof=1)) if len(values) > 1 else math.nan
    return float(values.mean()), std, int(len(values))


def _interval(values: pd.Series) -> dict[str, float]:
    """The 95 % t-interval of the mean over seeds (NaN with one seed)."""
    found = t_interval(values.to_numpy(dtype=float))
    return {"mae_low": found.low, "mae_high": found.high}


def table1(runs: pd.DataFrame) -> pd.DataFrame:
    """Test MAE per experiment, metric and strategy at the experiment's largest sizes (long format).

    Rows with strategy "pretrain" hold the pre-training run's own MAE on the source property.
    """
    rows: list[dict[str, object]] = []
    for experiment, exp_runs in transfer_runs(runs).groupby("experiment", sort=True):
        selected = select_largest(exp_runs)
        n_train, n_pretrain = largest_sizes(exp_runs)
        transferred = exp_runs[exp_runs["strategy"] != "none"]
        source = _mode(transferred["source"]) or _mode(exp_runs["source"])
        target = _mode(exp_runs["target"])
        task_type = _mode(transferred["task_type"]) or _mode(exp_runs["task_type"])
        pretrain = pretrain_runs_for(runs, selected[selected["strategy"] != "none"], source, n_pretrain)
        common = {"experiment": experiment, "task_type": task_type, "source": source, "target": target}
        for metric in ["test_mae", *subset_metrics(selected)]:
            base_mean, base_std, _ = _stats(selected.loc[selected["strategy"] == "none", metric])
            if metric in pretrain and pretrain[metric].notna().any():
                mean, std, n = _stats(pretrain[metric])
                rows.append(
                    {
                        **common,
                        "metric": metric,
                        "strategy": "pretrain",
                        "property": source,
                        "train_size": int(pretrain["train_size"].max()),
                        "pretrain_size": 0,
                        "mae_mean": mean,
                        "mae_std": std,
                        **_interval(pretrain[metric]),
                        "n_seeds": n,
                        "improvement_pct": math.nan,
                        "improvement_std_pct": math.nan,
                    }
                )
            for strategy in ordered_strategies(selected["strategy"]):
                chosen = selected[selected["strategy"] == strategy]
                mean, std, n = _stats(chosen[metric])
                if n == 0:
                    continue
                pct, pct_std = (math.nan, math.nan)
                if strategy != "none":
                    pct, pct_std = improvement(mean, std, base_mean, base_std)
                rows.append(
                    {
                        **common,
                        "metric": metric,
                        "strategy": strategy,
                        "property": target,
                        "train_size": n_train,
                        "pretrain_size": 0 if strategy == "none" else int(chosen["pretrain_size"].max()),
                        "mae_mean": mean,
                        "mae_std": std,
                        **_interval(chosen[metric]),
                        "n_seeds": n,
                        "improvement_pct": pct,
                        "improvement_std_pct": pct_std,
                    }
                )
    return pd.DataFrame(rows, columns=list(TABLE1_COLUMNS))


def intra_inter(runs: pd.DataFrame) -> pd.DataFrame:
    """Improvement over no transfer per source, for targets reached from two or more sources.

    No-transfer runs of a target are pooled over the experiments that share it: they train the same
    model on the same data. Transfers are taken at their largest pre-training size.
    """
    transfer = transfer_runs(runs)
    rows: list[dict[str, object]] = []
    for target, target_runs in transfer.groupby("target", sort=True):
        transferred = target_runs[target_runs["strategy"] != "none"]
        if transferred["source"].nunique() < 2:
            continue
        none = target_runs[target_runs["strategy"] == "none"]
        for (source, strategy), group in transferred.groupby(["source", "strategy"], sort=True):
            n_pretrain = int(group["pretrain_size"].max())
            group = group[group["pretrain_size"] == n_pretrain]
            for train_size, at_size in group.groupby("train_size", sort=True):
                mean, std, n = _stats(at_size["test_mae"])
                base_mean, base_std, _ = _stats(none.loc[none["train_size"] == train_size, "test_mae"])
                rows.append(
                    {
                        "target": target,
                        "source": source,
                        "task_type": _mode(at_size["task_type"]),
                        "strategy": strategy,
                        "train_size": int(train_size),
                        "pretrain_size": n_pretrain,
                        "mae_mean": mean,
                        "mae_std": std,
                        "n_seeds": n,
                        "none_mae_mean": base_mean,
                        "improvement_pct": improvement(mean, std, base_mean, base_std)[0],
                    }
                )
    return pd.DataFrame(rows, columns=list(INTRA_INTER_COLUMNS))


# --- Markdown ---------------------------------------------------------------------------------------


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    def cell(value: object) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def fmt(value: float, digits: int = 4) -> str:
    if value is None or not np.isfinite(value):
        return "n/a"
    return f"{value:.{digits}g}"


def _cell(row: pd.Series, bold: bool) -> str:
    text = fmt(row["mae_mean"])
    if np.isfinite(row["mae_low"]) and np.isfinite(row["mae_high"]):
        text += f" [{fmt(row['mae_low'], 3)}, {fmt(row['mae_high'], 3)}]"
    if bold:
        text = f"**{text}**"
    if np.isfinite(row["improvement_pct"]):
        text += f" ({row['improvement_pct']:.0f}%)"
    return text + f" [n={row['n_seeds']}]"


def table1_footnotes(strategies: Iterable[str]) -> list[str]:
    """The caveats of the strategies in a table, each marked in its column header."""
    present = set(strategies)
    notes = []
    if present & set(NEEDS_SOURCE_VALUE):
        notes.append(f"† {DELTA_KNOWN_NOTE}.")
    if present & set(JOINT_STRATEGIES):
        notes.append(f"‡ {JOINT_NOTE}.")
    return notes


def strategy_header(strategy: str) -> str:
    """A strategy's column label with the mark of its footnote (``table1_footnotes``)."""
    label = STRATEGY_LABELS.get(strategy, strategy)
    if strategy in NEEDS_SOURCE_VALUE:
        return label + " †"
    if strategy in JOINT_STRATEGIES:
        return label + " ‡"
    return label


def table1_markdown(table: pd.DataFrame) -> str:
    """Wide layout as in the paper: one row per experiment and metric, one column per strategy; the
    footnotes of the strategies that need them below it."""
    strategies = ordered_strategies(table["strategy"].unique()) if len(table) else []
    columns = ["pretrain"] + [s for s in strategies if s != "pretrain"]
    header = ["experiment", "task", "metric", "N train / N pretrain"] + [strategy_header(s) for s in columns]
    rows = []
    for (experiment, metric), group in table.groupby(["experiment", "metric"], sort=False):
        first = group.iloc[0]
        on_target = group[group["strategy"] != "pretrain"]
        best = on_target["mae_mean"].min() if len(on_target) else math.nan
        # the pre-training size in the row's label is that of the pre-trained weights, as in largest_sizes
        pretrained = on_target[on_target["strategy"].isin(PRETRAINED_STRATEGIES)]
        sized = pretrained if len(pretrained) else on_target
        n_pretrain = int(sized["pretrain_size"].max()) if len(sized) else 0
        n_train = int(on_target["train_size"].max()) if len(on_target) else 0
        task = f"{first['source']} → {first['target']} ({first['task_type']})"
        row = [experiment, task, metric, f"{n_train} / {n_pretrain}"]
        for strategy in columns:
            found = group[group["strategy"] == strategy]
            if found.empty:
                row.append("–")
                continue
            entry = found.iloc[0]
            text = _cell(entry, strategy != "pretrain" and entry["mae_mean"] == best)
            if strategy in JOINT_STRATEGIES and int(entry["pretrain_size"]) != n_pretrain:
                text += f" [pool {int(entry['pretrain_size'])}]"  # its own source pool, not the row's N pretrain
            row.append(text)
        rows.append(row)
    notes = table1_footnotes(columns)
    return markdown_table(header, rows) + ("\n" + "\n\n".join(notes) + "\n" if notes else "")


def intra_inter_markdown(table: pd.DataFrame) -> str:
    header = ["target", "strategy", "train size", "source (task)", "MAE", "no transfer MAE", "improvement"]
    rows = [
        [
            r.target,
            STRATEGY_LABELS.get(r.strategy, r.strategy),
            r.train_size,
            f"{r.source} ({r.task_type})",
            fmt(r.mae_mean),
            fmt(r.none_mae_mean),
            "n/a" if not np.isfinite(r.improvement_pct) else f"{r.improvement_pct:.1f}%",
        ]
        for r in table.sort_values(["target", "strategy", "train_size", "task_type"]).itertuples()
    ]
    return markdown_table(header, rows)
