"""Verdicts of a report against an earlier report's, claim by claim and check by check."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from benchmarks.report.verdict_changes import check_changes, claim_changes, read_claims, write_verdict_changes

EARLIER = Path(__file__).resolve().parents[1] / "benchmarks/results/reports/unconverged-0.3.0/cpu"


@pytest.fixture()
def before() -> pd.DataFrame:
    return read_claims(EARLIER)


def test_an_unchanged_report_changes_no_verdict(before: pd.DataFrame) -> None:
    claims = claim_changes(before, before)
    assert len(claims) == before["claim_id"].nunique() and set(claims["change"]) == {"same"}
    assert set(check_changes(before, before)["change"]) == {"same"}


def test_a_flipped_check_changes_its_claim_and_a_missing_check_is_dropped(before: pd.DataFrame) -> None:
    after = before.copy()
    first = after.index[after["claim_id"] == "full_beats_none"][0]
    after.loc[first, ["verdict", "measured"]] = ["contradicted", "MAE full − none = +5 % [+1, +9] % of none"]
    dropped = after.index[after["claim_id"] == "budget_balance"][0]
    dropped_check = after.loc[dropped, "check"]
    after = after.drop(index=dropped)

    claims = claim_changes(before, after).set_index("claim_id")
    assert claims.loc["full_beats_none", "change"] == "reproduced → contradicted"
    checks = check_changes(before, after).set_index(["claim_id", "check"])
    flipped = checks.loc[("full_beats_none", before.loc[first, "check"])]
    assert flipped["change"] == "reproduced → contradicted" and flipped["measured_after"].startswith("MAE full − none = +5")
    assert checks.loc[("budget_balance", dropped_check), "change"] == "dropped"
    assert (checks["change"] != "same").sum() == 2


def test_the_files_name_the_earlier_report_and_a_bad_table_is_named(before: pd.DataFrame, tmp_path: Path) -> None:
    path = write_verdict_changes(EARLIER, before, tmp_path)
    text = path.read_text(encoding="utf-8")
    assert str(EARLIER) in text and "0 of" in text
    assert len(pd.read_csv(tmp_path / "verdict_changes.csv")) == len(before)
    bad = tmp_path / "claims.csv"
    pd.DataFrame({"claim_id": ["x"]}).to_csv(bad, index=False)
    with pytest.raises(ValueError, match="claims.csv: not a claims table"):
        read_claims(tmp_path)
    with pytest.raises(FileNotFoundError, match="no claims table"):
        read_claims(tmp_path / "absent")
