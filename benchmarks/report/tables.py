"""Summary tables built from the runs frame: Table 1 and intra- against inter-property transfer."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from benchmarks.report.baselines import median_failures
from benchmarks.report.collect import SUBSET_PREFIX
from benchmarks.report.replicates import SHARE_LEVELS, nested_mae
from benchmarks.report.statistics import UNKNOWN_SHARES, t_interval, unknown
from cgat_dgl.strategies import REGISTRY, names, strategies

# Footnote marks of Table 1, one per distinct registry note, in registry order (stable across tables).
MARKS = ("†", "‡", "§", "¶", "‖", "#")


def strategy_label(name: str) -> str:
    """A strategy's label in tables and legends (``pretrain``: the pre-training run's own row)."""
    if name == "pretrain":
        return "pre-training (source)"
    entry = REGISTRY.get(name)
    return entry.label if entry is not None else name


def pretrained_strategies() -> tuple[str, ...]:
    """Strategies that start from a pre-training run's weights: their pretrain_size is that run's size."""
    return names(starts_from="pretrain")


def joint_strategies() -> tuple[str, ...]:
    """Strategies trained jointly on source and target data: their pretrain_size is the source pool they
    draw from, which need not be any pre-training run's size, so they are taken at their own largest."""
    return names(multifidelity=True)


def target_only_strategies() -> tuple[str, ...]:
    """Strategies whose runs depend on the target's data alone (no transfer, the target-only baselines):
    they have no pre-training size, and the experiments that share a target share them."""
    return names(target_only=True)


def note_marks() -> dict[str, str]:
    """Each registry note's footnote mark, in registry order; a strategy's mark is its note's."""
    notes = list(dict.fromkeys(entry.note for entry in REGISTRY.values() if entry.note))
    return {note: MARKS[i] if i < len(MARKS) else f"[{i + 1}]" for i, note in enumerate(notes)}


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
    "n_failed",  # runs of the cell whose test MAE is not below their training median's
    "interval",  # how mae_low/mae_high were obtained
    # each level's share of the interval's bootstrap variance (NaN: a level the cell does not vary, or
    # an interval that is no bootstrap)
    "share_splits",
    "share_models",
    "share_seeds",
    "share_materials",
)
FAILED_NOTE = (
    "✗k: k runs of the cell whose test MAE is not below that of the training median fitted on the same "
    "training subset: they learned nothing a constant does not, and no verdict rests on them"
)
INTRA_INTER_COLUMNS = (
    "experiment",
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
    known = strategies()
    return [s for s in known if s in present] + sorted(present - set(known))


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
    transferred = experiment_runs[~experiment_runs["strategy"].isin(target_only_strategies())]
    pretrained = transferred[transferred["strategy"].isin(pretrained_strategies())]
    # a joint strategy's source pool may exceed every pre-training size: it must not hide full transfer
    sized = pretrained if len(pretrained) else transferred
    n_train = int(experiment_runs["train_size"].max())
    n_pretrain = int(sized["pretrain_size"].max()) if len(sized) else 0
    return n_train, n_pretrain


def select_largest(experiment_runs: pd.DataFrame) -> pd.DataFrame:
    """Runs at the experiment's largest training size and, for transfers from pre-trained weights, the
    largest pre-training size (every other strategy: the largest source pool it ran with, if any)."""
    n_train, n_pretrain = largest_sizes(experiment_runs)
    at_train = experiment_runs["train_size"] == n_train
    pretrained = experiment_runs["strategy"].isin(pretrained_strategies())
    own_largest = experiment_runs.groupby("strategy")["pretrain_size"].transform("max")
    at_pretrain = (pretrained & (experiment_runs["pretrain_size"] == n_pretrain)) | (
        ~pretrained & (experiment_runs["pretrain_size"] == own_largest)
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


def _cell_statistics(cell: pd.DataFrame, metric: str, errors: Mapping[str, pd.Series] | None) -> dict[str, object]:
    """A cell's mean MAE, spread and 95 % interval. Where every run logged its predictions: a bootstrap
    over the seeds and the test materials (a new test set moves an MAE as much as a new seed does),
    nested over splits and pre-trained models where the cell spans several; otherwise over the runs,
    level by level where it spans several splits or models, else Student's t over the seeds. Each
    level's share of the bootstrap variance comes with it (``replicates.nested_mae``)."""
    cell = cell.dropna(subset=[metric])
    mean, std, n = _stats(cell[metric])
    found, shares = nested_mae(cell, metric, errors) if n else (unknown(), UNKNOWN_SHARES)
    if not found.known:  # one split and one model without predictions, or a single seed
        found, shares = t_interval(cell[metric].to_numpy(dtype=float)), UNKNOWN_SHARES
    return {"mae_mean": found.mean if found.known else mean, "mae_std": std, "mae_low": found.low,
            "mae_high": found.high, "n_seeds": n, "interval": found.method,
            **{f"share_{level}": getattr(shares, level) for level in SHARE_LEVELS}}


def table1(runs: pd.DataFrame, errors: Mapping[str, pd.Series] | None = None) -> pd.DataFrame:
    """Test MAE per experiment, metric and strategy at the experiment's largest sizes (long format).

    Rows with strategy "pretrain" hold the pre-training run's own MAE on the source property. ``errors``
    (run id -> absolute test error per material) adds the test materials as a level of the intervals of
    cells over several splits or pre-trained models.
    """
    rows: list[dict[str, object]] = []
    failed = median_failures(runs)
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
            none = _cell_statistics(selected[selected["strategy"] == "none"], metric, errors)
            if metric in pretrain and pretrain[metric].notna().any():
                rows.append(
                    {
                        **common,
                        "metric": metric,
                        "strategy": "pretrain",
                        "property": source,
                        "train_size": int(pretrain["train_size"].max()),
                        "pretrain_size": 0,
                        **_cell_statistics(pretrain, metric, None),
                        "improvement_pct": math.nan,
                        "improvement_std_pct": math.nan,
                        "n_failed": 0,
                    }
                )
            for strategy in ordered_strategies(selected["strategy"]):
                chosen = selected[selected["strategy"] == strategy]
                cell = _cell_statistics(chosen, metric, errors)
                if cell["n_seeds"] == 0:
                    continue
                pct, pct_std = (math.nan, math.nan)
                if strategy != "none":
                    pct, pct_std = improvement(float(cell["mae_mean"]), float(cell["mae_std"]),
                                               float(none["mae_mean"]), float(none["mae_std"]))
                rows.append(
                    {
                        **common,
                        "metric": metric,
                        "strategy": strategy,
                        "property": target,
                        "train_size": n_train,
                        "pretrain_size": 0 if strategy == "none" else int(chosen["pretrain_size"].max()),
                        **cell,
                        "improvement_pct": pct,
                        "improvement_std_pct": pct_std,
                        "n_failed": int(chosen.loc[chosen[metric].notna(), "run_id"].astype(str).isin(failed).sum()),
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
        # the transfers proper: no baseline, and nothing that depends on the target alone
        transferred = target_runs[~target_runs["strategy"].isin((*target_only_strategies(), *names(is_baseline=True)))]
        if transferred["source"].nunique() < 2:
            continue
        none = target_runs[target_runs["strategy"] == "none"].drop_duplicates("run_id")  # a shared run once
        for (experiment, source, strategy), group in transferred.groupby(["experiment", "source", "strategy"], sort=True):
            n_pretrain = int(group["pretrain_size"].max())
            group = group[group["pretrain_size"] == n_pretrain]
            for train_size, at_size in group.groupby("train_size", sort=True):
                mean, std, n = _stats(at_size["test_mae"])
                base_mean, base_std, _ = _stats(none.loc[none["train_size"] == train_size, "test_mae"])
                rows.append(
                    {
                        "experiment": experiment,
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
    text += f" [n={row['n_seeds']}]"
    failed = row.get("n_failed", 0)
    return text + f" ✗{int(failed)}" if pd.notna(failed) and failed > 0 else text


def table1_footnotes(strategies: Iterable[str]) -> list[str]:
    """The caveats of the strategies in a table (their registry notes), each marked in its column header."""
    present = [REGISTRY[name] for name in strategies if name in REGISTRY and REGISTRY[name].note]
    marks = note_marks()
    return [f"{marks[note]} {note}." for note in dict.fromkeys(entry.note for entry in present)]


def strategy_header(strategy: str) -> str:
    """A strategy's column label with the mark of its footnote (``table1_footnotes``)."""
    entry = REGISTRY.get(strategy)
    label = strategy_label(strategy)
    return f"{label} {note_marks()[entry.note]}" if entry is not None and entry.note else label


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
        pretrained = on_target[on_target["strategy"].isin(pretrained_strategies())]
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
            if strategy in joint_strategies() and int(entry["pretrain_size"]) != n_pretrain:
                text += f" [pool {int(entry['pretrain_size'])}]"  # its own source pool, not the row's N pretrain
            row.append(text)
        rows.append(row)
    notes = table1_footnotes(columns)
    if "n_failed" in table and (table["n_failed"].fillna(0) > 0).any():
        notes.append(FAILED_NOTE + ".")
    return markdown_table(header, rows) + ("\n" + "\n\n".join(notes) + "\n" if notes else "")


def intra_inter_markdown(table: pd.DataFrame) -> str:
    header = ["target", "strategy", "train size", "source (task, experiment)", "MAE", "no transfer MAE", "improvement"]
    rows = [
        [
            r.target,
            strategy_label(r.strategy),
            r.train_size,
            f"{r.source} ({r.task_type}, {r.experiment})",
            fmt(r.mae_mean),
            fmt(r.none_mae_mean),
            "n/a" if not np.isfinite(r.improvement_pct) else f"{r.improvement_pct:.1f}%",
        ]
        for r in table.sort_values(["target", "strategy", "train_size", "task_type", "experiment"]).itertuples()
    ]
    return markdown_table(header, rows)
