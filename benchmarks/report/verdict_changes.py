"""How the verdicts of one report differ from an earlier one's, claim by claim and check by check.

`cgat-bench report --compare-to EARLIER` reads the earlier report's ``claims.csv`` (a folder holding
one, or the file) and writes ``verdict_changes.csv`` and ``verdict_changes.md`` beside this report's
claims: each claim's combined verdict before and after, then each check matched on (claim, check),
with what it measured in both. A check only one report has is listed as added or dropped.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from benchmarks.report.claims import claim_verdicts
from benchmarks.report.tables import markdown_table

CLAIMS_FILE = "claims.csv"
CHECK_COLUMNS = ["claim_id", "check", "measured", "n", "verdict"]


def read_claims(path: Path) -> pd.DataFrame:
    """An earlier report's checks: ``claims.csv`` itself, or the report folder holding it."""
    path = Path(path)
    file = path / CLAIMS_FILE if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no claims table (a report folder holds {CLAIMS_FILE})")
    table = pd.read_csv(file)
    missing = [c for c in [*CHECK_COLUMNS, "claim"] if c not in table.columns]
    if missing:
        raise ValueError(f"{file}: not a claims table, it lacks the columns {missing}")
    return table


def _change(before: object, after: object) -> str:
    if pd.isna(before):
        return "added"
    if pd.isna(after):
        return "dropped"
    return "same" if before == after else f"{before} → {after}"


def claim_changes(before: pd.DataFrame, after: pd.DataFrame) -> pd.DataFrame:
    """One row per claim of either report: its combined verdict before and after."""
    old = claim_verdicts(before)[["claim_id", "claim", "verdict"]]
    new = claim_verdicts(after)[["claim_id", "claim", "verdict"]]
    table = new.merge(old, on="claim_id", how="outer", suffixes=("_after", "_before"))
    table["claim"] = table["claim_after"].fillna(table["claim_before"])
    table["change"] = [_change(b, a) for b, a in zip(table["verdict_before"], table["verdict_after"])]
    return table[["claim_id", "claim", "verdict_before", "verdict_after", "change"]]


def check_changes(before: pd.DataFrame, after: pd.DataFrame) -> pd.DataFrame:
    """One row per (claim, check) of either report, with what each measured and its verdict."""
    table = after[CHECK_COLUMNS].merge(before[CHECK_COLUMNS], on=["claim_id", "check"], how="outer",
                                       suffixes=("_after", "_before"))
    table["change"] = [_change(b, a) for b, a in zip(table["verdict_before"], table["verdict_after"])]
    order = ["claim_id", "check", "verdict_before", "verdict_after", "change",
             "measured_before", "measured_after", "n_before", "n_after"]
    return table[order]


def _cell(value: object) -> str:
    return "—" if pd.isna(value) else str(value)


def changes_markdown(claims: pd.DataFrame, checks: pd.DataFrame, earlier: str) -> str:
    changed = int((claims["change"] != "same").sum())
    lines = [
        f"# Verdicts against {earlier}\n",
        f"{changed} of {len(claims)} claims changed verdict. Checks are matched on claim and check; "
        "their numbers come from each report's own runs.\n",
        markdown_table(["claim", "before", "after", "change"],
                       [[r.claim, _cell(r.verdict_before), _cell(r.verdict_after), r.change] for r in claims.itertuples()]),
        markdown_table(
            ["claim", "check", "before", "after", "measured before", "measured after"],
            [[r.claim_id, r.check, _cell(r.verdict_before), _cell(r.verdict_after), _cell(r.measured_before),
              _cell(r.measured_after)] for r in checks.itertuples()],
        ),
    ]
    return "\n".join(lines)


def write_verdict_changes(earlier: Path, claims: pd.DataFrame, out_dir: Path) -> Path:
    """Compare ``claims`` (this report's checks) with the earlier report's; returns the markdown file."""
    before = read_claims(earlier)
    by_claim, by_check = claim_changes(before, claims), check_changes(before, claims)
    by_check.to_csv(out_dir / "verdict_changes.csv", index=False)
    path = out_dir / "verdict_changes.md"
    path.write_text(changes_markdown(by_claim, by_check, str(earlier)), encoding="utf-8")
    return path
