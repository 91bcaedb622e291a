"""Whether two reports' runs computed the same numbers: runs.csv against runs.csv, value by value.

Rows pair by run key and experiment (a run serving several experiments has a row for each). Every
column is compared as the text the report wrote, so equal means bitwise equal for the floats (pandas
writes them to round trip), except the provenance columns (run ids, commit, machine, wall times),
which differ between any two stores.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from benchmarks.report.collect import PROVENANCE_COLUMNS

PAIRING = ("run_key", "experiment")


@dataclass(frozen=True)
class RunsDiff:
    paired: int
    only_a: list[str]
    only_b: list[str]
    differences: pd.DataFrame  # run_key, experiment, column, a, b

    @property
    def same(self) -> bool:
        return not self.only_a and not self.only_b and self.differences.empty

    @property
    def b_within_a(self) -> bool:
        """Every run of b is in a with the same values (a may hold more: other suites, replications)."""
        return not self.only_b and self.differences.empty


def read_runs(path: Path) -> pd.DataFrame:
    """A report's runs.csv (or the report folder holding it), every value as its text."""
    path = path / "runs.csv" if path.is_dir() else path
    if not path.exists():
        raise FileNotFoundError(f"{path}: no runs.csv")
    runs = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [name for name in PAIRING if name not in runs]
    if missing:
        raise ValueError(f"{path}: no column {', '.join(missing)} (not a report's runs.csv)")
    duplicated = runs[runs.duplicated(list(PAIRING), keep=False)]
    if len(duplicated):
        first = duplicated.iloc[0]
        raise ValueError(f"{path}: run {first['run_key']} appears twice for experiment {first['experiment']}")
    return runs.set_index(list(PAIRING))


def diff_runs(a: pd.DataFrame, b: pd.DataFrame) -> RunsDiff:
    def label(index: pd.Index) -> list[str]:
        return [f"{key} ({experiment})" for key, experiment in index]

    both = a.index.intersection(b.index)
    columns = [c for c in dict.fromkeys([*a.columns, *b.columns]) if c not in PROVENANCE_COLUMNS]
    rows = []
    for column in columns:
        left = a.loc[both, column] if column in a else pd.Series("(absent)", index=both)
        right = b.loc[both, column] if column in b else pd.Series("(absent)", index=both)
        for (key, experiment), x, y in zip(both, left, right):
            if x != y:
                rows.append({"run_key": key, "experiment": experiment, "column": column, "a": x, "b": y})
    return RunsDiff(
        paired=len(both),
        only_a=label(a.index.difference(b.index)),
        only_b=label(b.index.difference(a.index)),
        differences=pd.DataFrame(rows, columns=["run_key", "experiment", "column", "a", "b"]),
    )


def summary(diff: RunsDiff, a: Path, b: Path, shown: int = 20, subset: bool = False) -> str:
    lines = [f"a: {a}", f"b: {b}"]
    runs_differing = diff.differences[["run_key", "experiment"]].drop_duplicates()
    lines.append(
        f"{diff.paired} runs in both: {len(runs_differing)} differ, in {len(diff.differences)} values "
        f"(provenance columns not compared: {', '.join(PROVENANCE_COLUMNS)}); "
        f"{len(diff.only_a)} only in a, {len(diff.only_b)} only in b"
    )
    for name, only in (("a", diff.only_a), ("b", diff.only_b)):
        lines += [f"only in {name}: {run}" for run in only[:shown]]
    for row in diff.differences.head(shown).itertuples():
        lines.append(f"{row.run_key} ({row.experiment}) {row.column}: a {row.a!r}, b {row.b!r}")
    if len(diff.differences) > shown:
        lines.append(f"... {len(diff.differences) - shown} more differences")
    if subset:
        lines.append("b's results are within a's" if diff.b_within_a else "b's results are not within a's")
    else:
        lines.append("same results" if diff.same else "different results")
    return "\n".join(lines)
