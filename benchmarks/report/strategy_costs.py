"""What each strategy trains: structure passes and wall time per experiment, strategy and size.

Strategies differ in what they train besides the target model: head, full and both delta strategies
start from a pre-training run's weights, multi-fidelity + fine-tuning from a joint run, and the joint
multi-fidelity model draws source structures every epoch. A comparison of their MAEs is only fair with
that cost beside it, so this table puts each strategy's own training next to the total including the
run its weights came from. Every number is read from the runs table.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from benchmarks.report.markdown import MarkdownReport, write_csv
from benchmarks.report.tables import (
    fmt,
    markdown_table,
    ordered_strategies,
    strategy_header,
    strategy_label,
    table1_footnotes,
    target_only_strategies,
    transfer_runs,
)
from cgat_dgl.strategies import REGISTRY

STRATEGY_COST_COLUMNS = (
    "experiment",
    "strategy",
    "label",
    "train_size",
    "pretrain_size",  # N source structures used: the pre-training set or the joint model's source pool
    "source_ratio",
    "n_runs",
    "trained_structures",  # means over the runs that logged them
    "total_trained_structures",
    "n_structures",
    "duration_s",
    "total_duration_s",  # with the duration of the run the weights came from, where it was found
    "n_total_duration",
    "starts_from",
    "suite",
    "note",
)
# The tag that names the run a strategy's weights come from, by what it starts from.
STARTS_FROM = {"pretrain": ("pretrain_run_id", "pre-training run"), "joint": ("joint_run_id", "joint run")}


def _starts_from(name: str) -> tuple[str | None, str]:
    entry = REGISTRY.get(name)
    return STARTS_FROM.get(entry.starts_from, (None, "")) if entry is not None else (None, "")


MISSING = ""  # a strategy that starts from another run, but the link to it was not recorded


def starting_run_id(row: pd.Series) -> str | None:
    """The id of the run whose weights ``row``'s run started from; None when it was trained from
    scratch, ``MISSING`` when it started from a run that it does not name."""
    column = _starts_from(str(row["strategy"]))[0]
    if column is None:
        return None
    value = row[column] if column in row.index else None
    return str(value) if isinstance(value, str) and value else MISSING


def total_durations(runs: pd.DataFrame) -> pd.Series:
    """Per run (same index as ``runs``), its wall time plus that of the runs its weights came from,
    followed back to a run trained from scratch; NaN where a link is missing from the table or a
    duration was not recorded."""
    by_id = runs.drop_duplicates("run_id").set_index("run_id")
    totals = []
    for _, row in runs.iterrows():
        total, seen, current = float(row["duration_s"]), {row["run_id"]}, row
        while (parent := starting_run_id(current)) is not None:
            if parent == MISSING or parent in seen or parent not in by_id.index:
                total = math.nan  # the starting run is not in this report: its cost is unknown
                break
            seen.add(parent)
            current = by_id.loc[parent]
            total += float(current["duration_s"])
        totals.append(total)
    return pd.Series(totals, index=runs.index, dtype=float)


def _mean(values: pd.Series) -> float:
    values = pd.to_numeric(values, errors="coerce").dropna()
    return float(values.mean()) if len(values) else math.nan


def _column(runs: pd.DataFrame, name: str, default: object) -> pd.Series:
    """A column of ``runs`` or, for frames from before it existed, ``default`` for every run."""
    return runs[name] if name in runs else pd.Series(default, index=runs.index)


def strategy_costs(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per experiment, strategy, training size and N source structures (``pretrain_size``)."""
    transfer = transfer_runs(runs).copy()
    if transfer.empty:
        return pd.DataFrame(columns=list(STRATEGY_COST_COLUMNS))
    for name in ("trained_structures", "total_trained_structures", "source_ratio", "duration_s"):
        transfer[name] = pd.to_numeric(_column(transfer, name, math.nan), errors="coerce")
    transfer["suite"] = _column(transfer, "suite", "paper").fillna("paper")
    # the starting runs (pre-training, joint) are looked up among all runs, of any kind
    everything = runs.assign(duration_s=pd.to_numeric(_column(runs, "duration_s", math.nan), errors="coerce"))
    transfer["total_duration_s"] = total_durations(everything).loc[transfer.index]
    order = {s: i for i, s in enumerate(ordered_strategies(transfer["strategy"].dropna().unique()))}
    rows: list[dict[str, object]] = []
    keys = ["experiment", "strategy", "train_size", "pretrain_size"]
    for (experiment, strategy, train_size, pretrain_size), group in transfer.groupby(keys, sort=True):
        strategy = str(strategy)
        entry = REGISTRY.get(strategy)
        note = entry.note if entry is not None else ""
        rows.append(
            {
                "experiment": experiment,
                "strategy": strategy,
                "label": strategy_label(strategy),
                "train_size": int(train_size),
                "pretrain_size": 0 if strategy in target_only_strategies() else int(pretrain_size),
                "source_ratio": _mean(group["source_ratio"]),
                "n_runs": int(len(group)),
                "trained_structures": _mean(group["trained_structures"]),
                "total_trained_structures": _mean(group["total_trained_structures"]),
                "n_structures": int(group["trained_structures"].notna().sum()),
                "duration_s": _mean(group["duration_s"]),
                "total_duration_s": _mean(group["total_duration_s"]),
                "n_total_duration": int(group["total_duration_s"].notna().sum()),
                "starts_from": _starts_from(strategy)[1],
                "suite": ", ".join(sorted(group["suite"].astype(str).unique())),
                "note": note,
            }
        )
    table = pd.DataFrame(rows, columns=list(STRATEGY_COST_COLUMNS))
    table["_order"] = table["strategy"].map(order)
    table = table.sort_values(["experiment", "_order", "train_size", "pretrain_size"], kind="stable")
    return table.drop(columns="_order").reset_index(drop=True)


def _count(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:,.0f}"


def strategy_costs_markdown(table: pd.DataFrame) -> str:
    header = [
        "experiment", "strategy", "N train", "N source", "source ratio", "runs", "structures trained",
        "… with starting weights", "wall time (s)", "… with starting run (s) [runs found]",
    ]  # fmt: skip
    rows = [
        [
            r.experiment,
            strategy_header(r.strategy),
            r.train_size,
            r.pretrain_size,
            fmt(r.source_ratio, 3),
            r.n_runs,
            _count(r.trained_structures),
            _count(r.total_trained_structures),
            fmt(r.duration_s, 3),
            (f"{fmt(r.total_duration_s, 3)} [{r.n_total_duration}]" if r.starts_from else "–"),
        ]
        for r in table.itertuples()
    ]
    return markdown_table(header, rows)


def strategy_cost_section(runs: pd.DataFrame, report: MarkdownReport, out_dir: Path) -> pd.DataFrame:
    """Write the "what each strategy trains" section and strategy_costs.csv; returns the table."""
    report.section("What each strategy trains")
    table = strategy_costs(runs)
    csv = write_csv(table, Path(out_dir) / "strategy_costs.csv")
    report.text(
        "Per experiment, strategy, training size and N source (the pre-training set the weights come from, "
        "or the joint model's source pool; 0 for no transfer): the number of runs, the mean structure "
        "passes each run trained (summed over its epochs) and with those of the run its weights came from "
        "(pre-training run for head, full and both delta strategies, joint run for multi-fidelity + "
        "fine-tuning; the same for strategies trained from scratch), and the mean wall time, alone and with "
        "the starting run's where that run is in this report. One pre-training run is shared by every "
        "transfer started from it, so the totals are the cost of one such model from scratch, not a share."
    )
    if table.empty:
        report.note("no finished transfer runs: nothing to account for")
        report.table("(none)\n", csv)
        return table
    report.table(strategy_costs_markdown(table), csv)
    if not (table["n_structures"] > 0).any():
        report.note("no run logged trained_structures (runs from before the runner counted them): structure columns are n/a")
    for note in table1_footnotes(ordered_strategies(table["strategy"].unique())):
        report.text(note)
    return table
