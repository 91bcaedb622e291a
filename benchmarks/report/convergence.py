"""Whether the runs behind a verdict had finished learning, and the pre-trained models' own record.

A check's interval says what its runs measured; if those runs were still learning, more training may
move it, so the check states no verdict (``not converged``) however narrow its interval. A check is
refused when

- any transfer run it rests on did not stop on a validation plateau (it hit its epoch cap, or it
  predates early stopping and logged no stop reason); a multi-fidelity fine-tuning also rests on the
  joint run it starts from;
- a pre-trained model it rests on belongs to a pre-training that missed its property's target test MAE
  (``Manifest.pretrain_targets``) by more than ``PRETRAIN_TARGET_SLACK``. The target is an accuracy on
  the whole pre-training set, so it is checked on the largest pre-training run of the property (same
  profile and split): a model of a tenth of the data (the pre-training-size study) is meant to miss
  it, and is judged by the recipe it shares with the largest;
- a trained run it rests on is no better than the training median fitted on the same training subset
  (``benchmarks.report.baselines``): it learned nothing, whatever its stop reason;
- its runs come from a profile that only checks the pipeline (``Profile.pipeline_check``): then, for a
  report of such profiles alone, every check is refused, measured or not.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

import pandas as pd

from benchmarks.manifest import PRETRAIN_TARGET_SLACK
from benchmarks.report.statistics import NOT_CONVERGED
from cgat_dgl.baselines import FITTED

PIPELINE_REASON = "pipeline check profile"
MAX_LABELS = 4  # runs named in a check's detail; the rest are counted
PRETRAIN_TABLE_COLUMNS = (
    "run_id", "property", "profile", "split_seed", "pretrain_size", "test_mae", "target", "ratio",
    "best_epoch", "epochs_run", "stop_reason", "train_seconds", "judged",
)  # fmt: skip


def _column(runs: pd.DataFrame, name: str) -> pd.Series:
    """A column of the runs frame, all missing when the frame lacks it (runs from before it existed)."""
    return runs[name] if name in runs else pd.Series(None, index=runs.index, dtype=object)


def resting_runs(runs: pd.DataFrame, run_ids: Collection[str]) -> pd.DataFrame:
    """The runs ``run_ids`` name, with the joint runs that multi-fidelity fine-tunings among them start from."""
    chosen = runs[runs["run_id"].isin(set(run_ids))]
    joint = set(_column(chosen, "joint_run_id").dropna())
    return runs[runs["run_id"].isin(set(run_ids) | joint)].drop_duplicates("run_id")  # a shared run once


def _label(run: pd.Series) -> str:
    return f"{run['experiment']} {run['strategy']} N{int(run['train_size'])} seed {run['seed']}"


def _labels(runs: pd.DataFrame) -> str:
    names = [_label(r) for _, r in runs.iterrows()]
    more = len(names) - MAX_LABELS
    return ", ".join(names[:MAX_LABELS]) + (f" and {more} more" if more > 0 else "")


def stop_reasons_text(transfers: pd.DataFrame) -> list[str]:
    """For each way of not stopping on a plateau: "k of n runs stopped at their epoch cap: <labels>"."""
    stop = _column(transfers, "stop_reason")
    capped = stop.eq("cap")
    unrecorded = ~stop.isin(["cap", "plateau", FITTED])  # no tag (or one the trainer does not write)
    texts = []
    for hit, what in ((capped, "stopped at their epoch cap"), (unrecorded, "have no stop reason (logged before early stopping)")):
        if hit.any():
            texts.append(f"{int(hit.sum())} of {len(transfers)} runs {what}: {_labels(transfers[hit])}")
    return texts


def _recipes(pretrain: pd.DataFrame) -> pd.Series:
    """The pre-training recipe of each run: its property, profile and split."""
    split = pd.to_numeric(_column(pretrain, "split_seed"), errors="coerce").fillna(0).astype(int)
    return pretrain["target"].astype(str) + " | " + pretrain["profile"].fillna("").astype(str) + " | " + split.astype(str)


def judged_models(runs: pd.DataFrame) -> pd.DataFrame:
    """The pre-training runs a target is checked on: the largest of each property, profile and split."""
    pretrain = runs[runs["kind"] == "pretrain"]
    if pretrain.empty:
        return pretrain
    largest = pretrain.groupby(_recipes(pretrain))["train_size"].transform("max")
    return pretrain[pretrain["train_size"] == largest]


@dataclass(frozen=True)
class ConvergenceGate:
    """Turns the verdict of a check whose runs had not finished learning into ``not converged``."""

    pretrain_targets: Mapping[str, float] = field(default_factory=dict)
    slack: float = PRETRAIN_TARGET_SLACK
    pipeline_runs: frozenset[str] = frozenset()  # runs of a pipeline-check profile
    pipeline_check: bool = False  # the report holds pipeline-check runs only: no check keeps a verdict
    failed_runs: frozenset[str] = frozenset()  # trained runs no better than their training median

    def misses_target(self, model: pd.Series) -> bool:
        target = self.pretrain_targets.get(str(model["target"]))
        return target is not None and float(model["test_mae"]) > self.slack * target

    def _target_texts(self, runs: pd.DataFrame, transfers: pd.DataFrame) -> list[str]:
        used = runs[(runs["kind"] == "pretrain") & runs["run_id"].isin(set(_column(transfers, "pretrain_run_id").dropna()))]
        judged = judged_models(runs)
        texts = []
        # the models used are judged by the largest run of their recipe
        for _, model in judged[_recipes(judged).isin(set(_recipes(used)))].iterrows():
            if self.misses_target(model):
                target = self.pretrain_targets[str(model["target"])]
                texts.append(
                    f"pre-trained {model['target']} test MAE {model['test_mae']:.3g} > {self.slack:g} x {target:g} "
                    f"(N pretrain {int(model['train_size'])})"
                )
        return list(dict.fromkeys(texts))

    def reason(self, runs: pd.DataFrame, run_ids: Collection[str]) -> str:
        """Why a check resting on ``run_ids`` (of the runs frame ``runs``) states no verdict; "" if it may."""
        if self.pipeline_check or self.pipeline_runs & set(run_ids):
            return PIPELINE_REASON
        rested = resting_runs(runs, run_ids)
        transfers = rested[rested["kind"] == "transfer"]
        if transfers.empty:
            return ""
        failed = transfers[transfers["run_id"].astype(str).isin(self.failed_runs)]
        texts = [f"{len(failed)} of {len(transfers)} runs not below the training median: {_labels(failed)}"] if len(failed) else []
        return "; ".join(stop_reasons_text(transfers) + texts + self._target_texts(runs, transfers))

    def apply(self, row: dict[str, object], runs: pd.DataFrame, run_ids: Collection[str]) -> dict[str, object]:
        """The claims-table row, with verdict ``not converged`` and the reason first in its detail when its
        runs had not finished learning; what the interval alone said stays in the detail."""
        why = self.reason(runs, run_ids)
        if not why:
            return row
        detail = f"{why} (the interval alone: {row['verdict']})"
        if row.get("detail"):
            detail += f"; {row['detail']}"
        return {**row, "verdict": NOT_CONVERGED, "detail": detail}


def _train_seconds(run: pd.Series) -> float:
    """The run's logged training time, else (a run from before it was logged) its wall time."""
    seconds = run.get("train_seconds", math.nan)
    return float(seconds) if pd.notna(seconds) else float(run.get("duration_s", math.nan))


def pretrain_table(runs: pd.DataFrame, gate: ConvergenceGate) -> pd.DataFrame:
    """One row per pre-trained model: its test MAE against its property's target and how it stopped.
    ``judged``: whether its target gates verdicts (the largest run of its property, profile and split)."""
    pretrain = runs[runs["kind"] == "pretrain"].sort_values(["target", "profile", "train_size"])
    judged = set(judged_models(runs)["run_id"])
    rows = []
    for _, run in pretrain.iterrows():
        target = gate.pretrain_targets.get(str(run["target"]), math.nan)
        ratio = float(run["test_mae"]) / target if math.isfinite(target) and target > 0 else math.nan
        rows.append(
            {
                "run_id": run["run_id"],
                "property": run["target"],
                "profile": run["profile"],
                "split_seed": run.get("split_seed", 0),
                "pretrain_size": int(run["train_size"]),
                "test_mae": run["test_mae"],
                "target": target,
                "ratio": ratio,
                "best_epoch": run.get("best_epoch", math.nan),
                "epochs_run": run.get("epochs_run", math.nan),
                "stop_reason": run.get("stop_reason"),
                # the training's own time: a shipped model's run lasts seconds, its card holds the training's
                "train_seconds": _train_seconds(run),
                "judged": run["run_id"] in judged,
            }
        )
    return pd.DataFrame(rows, columns=list(PRETRAIN_TABLE_COLUMNS))
