"""The convergence gate: checks resting on runs that had not finished learning state no verdict."""

from __future__ import annotations

import pandas as pd
import pytest

from benchmarks.report.claims import claim_verdicts, claims_markdown, claims_table, verdict_counts
from benchmarks.report.comparisons import comparison_table
from benchmarks.report.convergence import PIPELINE_REASON, ConvergenceGate, resting_runs
from benchmarks.report.scaling import fit_table, size_points
from benchmarks.report.statistics import (
    CONTRADICTED,
    INCONCLUSIVE,
    NOT_CONVERGED,
    REPRODUCED,
    combine_verdicts,
)

TARGETS = {"e_form_pbe": 0.045}
# none and full at four training sizes (what a linearity test needs) and three seeds; full is clearly better
MAES = {"none": (1.0, 1.2, 1.1), "full": (0.8, 0.9, 0.85)}


def _run(strategy: str, seed: int, train_size: int, **extra: object) -> dict[str, object]:
    row = {
        "run_id": f"{strategy}-{train_size}-{seed}",
        "kind": "transfer",
        "experiment": "intra",
        "profile": "cpu",
        "strategy": strategy,
        "source": "e_form_pbe",
        "target": "e_form_r2scan",
        "task_type": "intra",
        "seed": seed,
        "train_size": train_size,
        "pretrain_size": 0 if strategy == "none" else 1000,
        "pretrain_run_id": None if strategy == "none" else "pre-1000",
        "test_mae": MAES[strategy][seed] * (train_size / 100) ** -0.3,
        "stop_reason": "plateau",
    }
    row.update(extra)
    return row


def _pretrain(run_id: str, size: int, mae: float) -> dict[str, object]:
    return {
        "run_id": run_id, "kind": "pretrain", "experiment": "pretrain", "profile": "cpu", "strategy": "pretrain",
        "source": "e_form_pbe", "target": "e_form_pbe", "task_type": "pretrain", "seed": 0, "train_size": size,
        "pretrain_size": 0, "pretrain_run_id": None, "test_mae": mae, "stop_reason": "cap",
    }  # fmt: skip


def _runs(stops: dict[str, str | None] | None = None, pretrain_mae: float = 0.05) -> pd.DataFrame:
    """``stops``: run id -> stop reason of the runs that did not stop on a plateau."""
    rows = [_run(s, seed, n) for s in MAES for n in (50, 100, 200, 300) for seed in range(3)]
    for row in rows:
        row["stop_reason"] = (stops or {}).get(str(row["run_id"]), "plateau")
    rows.append(_pretrain("pre-1000", 1000, pretrain_mae))
    return pd.DataFrame(rows)


def _claims(runs: pd.DataFrame, gate: ConvergenceGate | None) -> pd.DataFrame:
    return claims_table(runs, comparison_table(runs), fit_table(size_points(runs), runs), gate=gate)


def _check(claims: pd.DataFrame, claim_id: str, check: str) -> pd.Series:
    found = claims[(claims["claim_id"] == claim_id) & (claims["check"] == check)]
    assert len(found) == 1, (claim_id, check, claims[["claim_id", "check"]])
    return found.iloc[0]


FULL_NONE = "intra: e_form_pbe → e_form_r2scan"  # the check at the largest training size, 300
FULL_LINE = "intra, full, pre-training 1000"  # the slope of full transfer over training size


def test_converged_runs_keep_their_verdicts() -> None:
    claims = _claims(_runs(), ConvergenceGate(pretrain_targets=TARGETS))
    assert _check(claims, "full_beats_none", FULL_NONE)["verdict"] == REPRODUCED
    assert _check(claims, "loglog_train", FULL_LINE)["verdict"] == REPRODUCED
    assert NOT_CONVERGED not in set(claims["verdict"])


def test_a_capped_run_turns_the_checks_resting_on_it_into_not_converged() -> None:
    runs = _runs({"full-300-1": "cap"})
    gate = ConvergenceGate(pretrain_targets=TARGETS)
    claims = _claims(runs, gate)
    check = _check(claims, "full_beats_none", FULL_NONE)
    assert check["verdict"] == NOT_CONVERGED
    assert check["detail"].startswith("1 of 6 runs stopped at their epoch cap: intra full N300 seed 1 (the interval alone: reproduced)")
    assert _check(claims, "loglog_train", FULL_LINE)["verdict"] == NOT_CONVERGED  # the line through N 300
    # no transfer's line does not rest on it
    assert _check(claims, "loglog_train", "intra, none, pre-training 0")["verdict"] == REPRODUCED
    summary = claim_verdicts(claims).set_index("claim_id")
    assert summary.loc["full_beats_none", "verdict"] == NOT_CONVERGED and summary.loc["full_beats_none", "not_converged"] == 1
    assert summary.loc["loglog_train", "verdict"] == NOT_CONVERGED
    # without a gate the statistics alone decide, as before
    assert _check(_claims(runs, None), "full_beats_none", FULL_NONE)["verdict"] == REPRODUCED


def test_the_gate_is_at_the_level_of_the_runs_a_check_rests_on() -> None:
    # capped at the smaller training size: the line over training sizes rests on it, the comparison at 300 does not
    claims = _claims(_runs({"full-100-0": "cap"}), ConvergenceGate())
    assert _check(claims, "full_beats_none", FULL_NONE)["verdict"] == REPRODUCED
    assert _check(claims, "loglog_train", FULL_LINE)["verdict"] == NOT_CONVERGED


def test_runs_without_a_stop_reason_are_not_converged() -> None:
    claims = _claims(_runs({"none-300-2": None, "full-300-0": "cap"}), ConvergenceGate())
    detail = _check(claims, "full_beats_none", FULL_NONE)["detail"]
    assert detail.startswith(
        "1 of 6 runs stopped at their epoch cap: intra full N300 seed 0; "
        "1 of 6 runs have no stop reason (logged before early stopping): intra none N300 seed 2"
    )


def test_a_pretrained_model_missing_its_target_refuses_the_checks_on_transfers_from_it() -> None:
    gate = ConvergenceGate(pretrain_targets=TARGETS)
    claims = _claims(_runs(pretrain_mae=0.081), gate)
    check = _check(claims, "full_beats_none", FULL_NONE)
    assert check["verdict"] == NOT_CONVERGED
    assert check["detail"].startswith("pre-trained e_form_pbe test MAE 0.081 > 1.5 x 0.045 (N pretrain 1000)")
    # no transfer does not start from it
    assert _check(claims, "loglog_train", "intra, none, pre-training 0")["verdict"] == REPRODUCED
    # within 1.5 x the target, or a property without a target: the verdict stands
    assert _check(_claims(_runs(pretrain_mae=0.067), gate), "full_beats_none", FULL_NONE)["verdict"] == REPRODUCED
    assert _check(_claims(_runs(pretrain_mae=0.081), ConvergenceGate()), "full_beats_none", FULL_NONE)["verdict"] == REPRODUCED


def test_a_smaller_pretraining_is_judged_by_the_largest_of_its_property() -> None:
    gate = ConvergenceGate(pretrain_targets=TARGETS)
    # the transfers start from a 1000-structure model far above the target, the 10000 one meets it
    runs = _runs(pretrain_mae=0.2)
    large = pd.DataFrame([_pretrain("pre-10000", 10000, 0.05)])
    assert _check(_claims(pd.concat([runs, large], ignore_index=True), gate), "full_beats_none", FULL_NONE)["verdict"] == REPRODUCED
    missed = pd.DataFrame([_pretrain("pre-10000", 10000, 0.09)])
    check = _check(_claims(pd.concat([runs, missed], ignore_index=True), gate), "full_beats_none", FULL_NONE)
    assert check["verdict"] == NOT_CONVERGED and "test MAE 0.09 > 1.5 x 0.045 (N pretrain 10000)" in check["detail"]


def test_a_pipeline_check_refuses_every_check() -> None:
    claims = _claims(_runs(), ConvergenceGate(pipeline_check=True))
    assert (claims["verdict"] == NOT_CONVERGED).all()
    assert claims["detail"].str.startswith(PIPELINE_REASON).all()
    assert "not measured" in set(claims["measured"])  # unmeasured checks too
    counts = verdict_counts(claims)
    assert counts == {"reproduced": 0, "contradicted": 0, "not_converged": len(claim_verdicts(claims)), "inconclusive": 0}
    n_checks = int((claims["claim_id"] == "full_beats_none").sum())
    assert f"| **not converged** | {n_checks} (0 / 0 / {n_checks} / 0) |" in claims_markdown(claims)
    # runs of a pipeline-check profile among others: only the checks resting on them
    runs = _runs()
    gate = ConvergenceGate(pipeline_runs=frozenset(runs.loc[runs["strategy"] == "full", "run_id"]))
    claims = _claims(runs, gate)
    assert _check(claims, "full_beats_none", FULL_NONE)["detail"].startswith(PIPELINE_REASON)
    assert _check(claims, "loglog_train", "intra, none, pre-training 0")["verdict"] == REPRODUCED


def test_a_fine_tuning_rests_on_its_joint_run() -> None:
    runs = pd.DataFrame(
        [
            {"run_id": "joint", "kind": "transfer", "joint_run_id": None},
            {"run_id": "ft", "kind": "transfer", "joint_run_id": "joint"},
            {"run_id": "other", "kind": "transfer", "joint_run_id": None},
        ]
    )
    assert set(resting_runs(runs, ["ft"])["run_id"]) == {"ft", "joint"}


@pytest.mark.parametrize(
    ("verdicts", "combined"),
    [
        ([REPRODUCED, NOT_CONVERGED], NOT_CONVERGED),
        ([INCONCLUSIVE, NOT_CONVERGED], NOT_CONVERGED),
        ([CONTRADICTED, NOT_CONVERGED], CONTRADICTED),  # a converged contradiction stands
        ([NOT_CONVERGED], NOT_CONVERGED),
        ([REPRODUCED, REPRODUCED], REPRODUCED),
    ],
)
def test_combined_verdicts_with_not_converged(verdicts: list[str], combined: str) -> None:
    assert combine_verdicts(verdicts) == combined
