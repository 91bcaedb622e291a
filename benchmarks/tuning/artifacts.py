"""What a finished study leaves behind: best trial, trials table, plots, and comparisons of studies."""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.trial import TrialState

from benchmarks.tuning.mlflow_callback import RUN_ID_ATTR
from benchmarks.tuning.storage import display_url
from cgat_dgl.strategies import UnknownName

PARAMS = ("lr", "weight_decay")
SURPLUS_ATTR = "surplus"  # a trial asked beyond n_trials by a racing worker, declined untrained


def counted_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))


def best_trial_summary(study: optuna.Study) -> dict[str, Any]:
    """The best complete trial (params, value, its run and test metrics) and the trial counts."""
    trials = study.get_trials(deepcopy=False)
    counts = {state.name.lower(): sum(t.state == state for t in trials) for state in TrialState}
    counts["surplus"] = sum(bool(t.user_attrs.get(SURPLUS_ATTR)) for t in trials)
    summary: dict[str, Any] = {"study": study.study_name, "counts": counts, "best": None}
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    if complete:
        best = study.best_trial
        summary["best"] = {
            "number": best.number,
            "value": best.value,
            "params": dict(best.params),
            "mlflow_run_id": best.user_attrs.get(RUN_ID_ATTR),
            "user_attrs": {k: v for k, v in best.user_attrs.items() if k != RUN_ID_ATTR},
        }
    return summary


def write_trials_csv(study: optuna.Study, path: Path) -> Path:
    frame = study.trials_dataframe(multi_index=False)
    frame.to_csv(path, index=False)
    return path


def _complete_with_both_params(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [
        t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if all(p in t.params for p in PARAMS)
    ]


def _varies(trials: Sequence[optuna.trial.FrozenTrial], name: str) -> bool:
    return len({t.params[name] for t in trials}) > 1


def plot_readiness(study: optuna.Study) -> dict[str, str | None]:
    """Per plot, None when it can be drawn, else why not (importances and contours need variation)."""
    complete = _complete_with_both_params(study)
    reasons: dict[str, str | None] = {"optimization_history": None, "param_importances": None, "contour": None}
    if not complete:
        reasons["optimization_history"] = "no complete trial yet"
    if len(complete) < 2:
        reasons["param_importances"] = f"needs at least 2 complete trials, the study has {len(complete)}"
        reasons["contour"] = reasons["param_importances"]
    else:
        fixed = [name for name in PARAMS if not _varies(complete, name)]
        if len(fixed) == len(PARAMS):
            reasons["param_importances"] = "every complete trial has the same parameters"
        if fixed:
            reasons["contour"] = f"{', '.join(fixed)} takes a single value over the complete trials"
    return reasons


def write_plots(study: optuna.Study, folder: Path) -> dict[str, Path]:
    """PNG plots (history, importances, lr x weight decay contour), or a note saying why one is missing."""
    import matplotlib

    matplotlib.use("Agg")  # files only: workers have no display
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as optuna_plots

    folder.mkdir(parents=True, exist_ok=True)
    makers = {
        "optimization_history": lambda: optuna_plots.plot_optimization_history(study),
        "param_importances": lambda: optuna_plots.plot_param_importances(study, params=list(PARAMS)),
        "contour": lambda: optuna_plots.plot_contour(study, params=list(PARAMS)),
    }
    written: dict[str, Path] = {}
    for name, reason in plot_readiness(study).items():
        if reason is None:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    axes = makers[name]()
            except (ValueError, RuntimeError, ZeroDivisionError) as error:
                # e.g. importances of a study whose objective values are all equal
                reason = f"{type(error).__name__}: {error}"
            else:
                figure = _figure_of(axes)  # log-scaled lr and weight decay axes come from the distributions
                path = folder / f"{name}.png"
                figure.set_size_inches(7, 5)
                figure.tight_layout()
                figure.savefig(path, dpi=110)
                plt.close(figure)
                written[name] = path
                continue
        note = folder / f"{name}.txt"
        note.write_text(f"{name} not drawn for study {study.study_name!r}: {reason}\n")
        written[name] = note
    return written


def _figure_of(axes: Any) -> Any:
    first = axes.flat[0] if hasattr(axes, "flat") else axes
    return first.figure


def write_summary(study: optuna.Study, folder: Path) -> dict[str, Path]:
    """best_trial.json, trials.csv and the plots in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    best = folder / "best_trial.json"
    best.write_text(json.dumps(best_trial_summary(study), indent=2, default=str) + "\n")
    files = {"best_trial": best, "trials": write_trials_csv(study, folder / "trials.csv")}
    files.update(write_plots(study, folder))
    return files


# --- comparison of studies (e.g. one per strategy with the same budget) --------------------------------
COMPARISON_COLUMNS = [
    "study", "strategy", "sampler", "n_trials", "complete", "pruned", "failed",
    "best_trial", "best_val_mae", "lr", "weight_decay", "test_mae",
]


def compare_studies(storage: str | optuna.storages.BaseStorage, names: Sequence[str]) -> pd.DataFrame:
    """One row per study: its budget, its trial counts and its best trial (NaN without a complete one)."""
    known = {summary.study_name for summary in optuna.get_all_study_summaries(storage, include_best_trial=False)}
    missing = [name for name in names if name not in known]
    if missing:
        raise UnknownName(f"no study {missing} in storage {_storage_text(storage)}; known: {sorted(known)}")
    rows = []
    for name in names:
        study = optuna.load_study(study_name=name, storage=storage)
        summary = best_trial_summary(study)
        attrs = study.user_attrs
        best = summary["best"] or {}
        params = best.get("params", {})
        rows.append(
            {
                "study": name,
                "strategy": attrs.get("strategy", ""),
                "sampler": attrs.get("sampler", ""),
                "n_trials": attrs.get("n_trials", math.nan),
                "complete": summary["counts"]["complete"],
                "pruned": summary["counts"]["pruned"],
                "failed": summary["counts"]["fail"] - summary["counts"]["surplus"],
                "best_trial": best.get("number", math.nan),
                "best_val_mae": best.get("value", math.nan),
                "lr": params.get("lr", math.nan),
                "weight_decay": params.get("weight_decay", math.nan),
                "test_mae": best.get("user_attrs", {}).get("test_mae", math.nan),
            }
        )
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)


def _storage_text(storage: str | optuna.storages.BaseStorage) -> str:
    return display_url(storage) if isinstance(storage, str) else type(storage).__name__


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub markdown table; floats in 4 significant digits, missing values empty."""

    def cell(value: Any) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return ""
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value).replace("|", "\\|")

    header = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


def write_comparison(frame: pd.DataFrame, path: Path, title: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = (f"## {title}\n\n" if title else "") + markdown_table(frame)
    path.write_text(text)
    frame.to_csv(path.with_suffix(".csv"), index=False)
    return path
