"""Scaling of the test MAE with the training and pre-training set sizes, and extrapolations from it."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from benchmarks.report.fits import (
    MIN_POINTS_FOR_SE,
    Estimate,
    Fit,
    crossing_estimate,
    loglog_fit,
    size_to_reach_estimate,
)
from benchmarks.report.statistics import lack_of_fit, t_interval
from benchmarks.report.tables import transfer_runs

# A log-log line is called linear, and extrapolated or budgeted from, only with this many distinct
# sizes and no lack of fit against the seed replicates (``statistics.lack_of_fit``).
LINEAR_SIZES = 4

POINT_COLUMNS = (
    "experiment",
    "source",
    "target",
    "strategy",
    "pretrain_size",
    "train_size",
    "mae_mean",
    "mae_std",
    "n_seeds",
)
FIT_COLUMNS = (
    "experiment",
    "strategy",
    "pretrain_size",
    "train_size",
    "x",
    "slope",
    "slope_se",
    "intercept",
    "intercept_se",
    "cov_slope_intercept",
    "n_points",
    "slope_low",  # 95 % t-interval of the slope over seeds: one line fitted per seed
    "slope_high",
    "n_seed_fits",
    "lack_of_fit_p",  # the straight line against the seed replicates (NaN: fewer than 3 sizes or no replicates)
    "linear",  # at least LINEAR_SIZES sizes and no lack of fit: the line may be extrapolated
    "note",
)
EXTRAPOLATION_COLUMNS = (
    "experiment",
    "target",
    "strategy",
    "pretrain_size",
    "max_train_size",
    "crossing_train_size",
    "crossing_low",
    "crossing_high",
    "crossing_note",
    "best_mae",
    "best_train_size",
    "best_pretrain_size",
    "none_size_to_match",
    "none_size_low",
    "none_size_high",
    "match_factor",
    "match_note",
    "linear",  # every line the row extrapolates passed the linearity test; otherwise it is shown for reference only
)


def size_points(runs: pd.DataFrame, metric: str = "test_mae") -> pd.DataFrame:
    """Mean and spread over seeds of ``metric`` per experiment, strategy, pre-training and training size."""
    transfer = transfer_runs(runs).dropna(subset=[metric])
    if transfer.empty:
        return pd.DataFrame(columns=list(POINT_COLUMNS))
    grouped = transfer.groupby(["experiment", "strategy", "pretrain_size", "train_size"], sort=True)
    points = grouped.agg(
        source=("source", "first"),
        target=("target", "first"),
        mae_mean=(metric, "mean"),
        mae_std=(metric, "std"),
        n_seeds=(metric, "count"),
    ).reset_index()
    return points[list(POINT_COLUMNS)]


def _note(n_distinct: int, what: str) -> str:
    if n_distinct < 2:
        return f"only one {what}: no fit"
    if n_distinct < MIN_POINTS_FOR_SE:
        return f"only {n_distinct} {what}s: exact line, no uncertainty"
    return ""


def _fit_row(keys: dict[str, object], x: str, xs: pd.Series, ys: pd.Series) -> dict[str, object]:
    n_distinct = int(xs.nunique())
    row: dict[str, object] = {**keys, "x": x, "n_points": int(len(xs)), "note": _note(n_distinct, x.replace("_", " "))}
    if n_distinct < 2:
        row.update(dict.fromkeys(("slope", "slope_se", "intercept", "intercept_se", "cov_slope_intercept"), math.nan))
        return row
    fit = loglog_fit(xs.to_numpy(), ys.to_numpy())
    row.update(
        slope=fit.slope,
        slope_se=fit.slope_se,
        intercept=fit.intercept,
        intercept_se=fit.intercept_se,
        cov_slope_intercept=fit.cov_slope_intercept,
    )
    return row


def seed_slopes(runs: pd.DataFrame, x: str, keys: dict[str, object], metric: str = "test_mae") -> dict[int, float]:
    """{seed: slope} of one line per seed through that seed's runs of a fit (seeds with two sizes or more)."""
    slopes: dict[int, float] = {}
    for seed, seed_runs in line_runs(runs, x, keys, metric).groupby("seed"):
        by_size = seed_runs.groupby(x)[metric].mean()
        if by_size.size >= 2 and (by_size > 0).all():
            slopes[int(seed)] = loglog_fit(by_size.index.to_numpy(float), by_size.to_numpy(float)).slope
    return slopes


def line_runs(runs: pd.DataFrame, x: str, keys: dict[str, object], metric: str = "test_mae") -> pd.DataFrame:
    """The runs of one line: every size along ``x`` at the line's fixed keys, with a positive ``metric``."""
    transfer = transfer_runs(runs).dropna(subset=[metric])
    mask = np.ones(len(transfer), dtype=bool)
    for column, value in keys.items():
        if column != x and not (isinstance(value, float) and math.isnan(value)):
            mask &= (transfer[column] == value).to_numpy()
    line = transfer[mask]
    return line[(line[x] > 0) & (line[metric] > 0)]


def _with_seed_interval(row: dict[str, object], runs: pd.DataFrame | None, x: str, keys: dict[str, object]) -> dict[str, object]:
    slopes = list(seed_slopes(runs, x, keys).values()) if runs is not None else []
    found = t_interval(slopes)
    row.update(slope_low=found.low, slope_high=found.high, n_seed_fits=len(slopes))
    test = None
    if runs is not None:
        line = line_runs(runs, x, keys)
        test = lack_of_fit(np.log10(line[x].astype(float)), np.log10(line["test_mae"].astype(float)))
    row["lack_of_fit_p"] = test.p if test is not None else math.nan
    row["linear"] = bool(test is not None and test.sizes >= LINEAR_SIZES and math.isfinite(test.p) and not test.curved)
    return row


def fit_table(points: pd.DataFrame, runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every log-log fit: MAE against training size per (experiment, strategy, pre-training size), and
    MAE against pre-training size per (experiment, transfer strategy, training size) where several
    pre-training sizes were run. Fits are on the seed means, one point per size; with ``runs``, the
    slope's 95 % interval comes from one line per seed (the spread a rerun would show)."""
    rows: list[dict[str, object]] = []
    for (experiment, strategy, n_pretrain), group in points.groupby(["experiment", "strategy", "pretrain_size"]):
        keys = {"experiment": experiment, "strategy": strategy, "pretrain_size": int(n_pretrain)}
        row = _fit_row({**keys, "train_size": math.nan}, "train_size", group["train_size"], group["mae_mean"])
        rows.append(_with_seed_interval(row, runs, "train_size", keys))
    transferred = points[points["strategy"] != "none"]
    for (experiment, strategy, n_train), group in transferred.groupby(["experiment", "strategy", "train_size"]):
        if group["pretrain_size"].nunique() < 2:
            continue
        keys = {"experiment": experiment, "strategy": strategy, "train_size": int(n_train)}
        row = _fit_row({**keys, "pretrain_size": math.nan}, "pretrain_size", group["pretrain_size"], group["mae_mean"])
        rows.append(_with_seed_interval(row, runs, "pretrain_size", keys))
    return pd.DataFrame(rows, columns=list(FIT_COLUMNS))


def fit_from_row(row: pd.Series) -> Fit | None:
    if not math.isfinite(float(row["slope"])):
        return None
    return Fit(
        slope=float(row["slope"]),
        slope_se=float(row["slope_se"]),
        intercept=float(row["intercept"]),
        intercept_se=float(row["intercept_se"]),
        n=int(row["n_points"]),
        cov_slope_intercept=float(row["cov_slope_intercept"]),
    )


def is_linear(fits: pd.DataFrame, experiment: str, x: str, at: str, size: int, strategy: str = "none") -> bool:
    """Whether the line of ``strategy`` over ``x`` at ``at`` = ``size`` passed the linearity test."""
    if "linear" not in fits:
        return False
    found = fits[(fits["x"] == x) & (fits["experiment"] == experiment) & (fits["strategy"] == strategy)
                 & (pd.to_numeric(fits[at], errors="coerce") == size)]  # fmt: skip
    return bool(len(found)) and bool(found["linear"].fillna(False).astype(bool).iloc[0])


def train_size_fit(fits: pd.DataFrame, experiment: str, strategy: str, pretrain_size: int) -> Fit | None:
    found = fits[
        (fits["x"] == "train_size")
        & (fits["experiment"] == experiment)
        & (fits["strategy"] == strategy)
        & (fits["pretrain_size"] == pretrain_size)
    ]
    return fit_from_row(found.iloc[0]) if len(found) else None


def _range(estimate: Estimate | None) -> tuple[float, float, float]:
    if estimate is None:
        return math.nan, math.nan, math.nan
    return estimate.value, estimate.low, estimate.high


def extrapolations(points: pd.DataFrame, fits: pd.DataFrame) -> pd.DataFrame:
    """Per experiment and transfer strategy (largest pre-training size with a fit):

    - the training size at which the no-transfer and transfer lines meet: beyond it transfer stops
      helping (the paper's "1.6 M"); "no crossing" when no transfer is not the steeper line;
    - the training size no transfer needs to match the best measured transfer MAE (the paper's "613 k").
    """
    rows: list[dict[str, object]] = []
    for experiment, exp_points in points.groupby("experiment", sort=True):
        none_fit = train_size_fit(fits, experiment, "none", 0)
        for strategy in sorted(set(exp_points["strategy"]) - {"none"}):
            strat_points = exp_points[exp_points["strategy"] == strategy]
            fitted = [
                int(p)
                for p in sorted(strat_points["pretrain_size"].unique(), reverse=True)
                if train_size_fit(fits, experiment, strategy, int(p)) is not None
            ]
            n_pretrain = fitted[0] if fitted else int(strat_points["pretrain_size"].max())
            transfer_fit = train_size_fit(fits, experiment, strategy, n_pretrain)
            best = strat_points.loc[strat_points["mae_mean"].idxmin()]
            row: dict[str, object] = {
                "experiment": experiment,
                "target": best["target"],
                "strategy": strategy,
                "pretrain_size": n_pretrain,
                "max_train_size": int(exp_points["train_size"].max()),
                "best_mae": float(best["mae_mean"]),
                "best_train_size": int(best["train_size"]),
                "best_pretrain_size": int(best["pretrain_size"]),
            }
            crossing, crossing_note = _crossing(none_fit, transfer_fit, int(exp_points["train_size"].max()))
            row["crossing_train_size"], row["crossing_low"], row["crossing_high"] = _range(crossing)
            row["crossing_note"] = crossing_note
            match, match_note = _match(none_fit, float(best["mae_mean"]))
            row["none_size_to_match"], row["none_size_low"], row["none_size_high"] = _range(match)
            row["match_factor"] = match.value / row["best_train_size"] if match is not None else math.nan
            row["match_note"] = match_note
            row["linear"] = is_linear(fits, experiment, "train_size", "pretrain_size", 0) and is_linear(
                fits, experiment, "train_size", "pretrain_size", n_pretrain, strategy
            )
            rows.append(row)
    return pd.DataFrame(rows, columns=list(EXTRAPOLATION_COLUMNS))


def _uncertainty_note(*fits: Fit) -> str:
    return "" if all(f.has_uncertainty for f in fits) else "no uncertainty (a fit has fewer than 3 sizes)"


def _crossing(none_fit: Fit | None, transfer_fit: Fit | None, max_train: int) -> tuple[Estimate | None, str]:
    if none_fit is None or transfer_fit is None:
        missing = "no-transfer" if none_fit is None else "transfer"
        return None, f"not computed: no {missing} fit over training size"
    if none_fit.slope >= transfer_fit.slope:
        return None, "no crossing: the no-transfer line is not steeper, the lines do not meet at larger sizes"
    estimate = crossing_estimate(none_fit, transfer_fit)
    if estimate is None:  # pragma: no cover - unequal slopes always meet
        return None, "no crossing: parallel lines"
    note = _uncertainty_note(none_fit, transfer_fit)
    if estimate.value <= max_train:
        note = "; ".join(filter(None, ["within or below the measured sizes: no transfer is already as good", note]))
    return estimate, note


def _match(none_fit: Fit | None, mae: float) -> tuple[Estimate | None, str]:
    if none_fit is None:
        return None, "not computed: no no-transfer fit over training size"
    estimate = size_to_reach_estimate(none_fit, mae)
    if estimate is None:
        return None, "not reachable: the no-transfer MAE does not fall with training size"
    return estimate, _uncertainty_note(none_fit)


def pretrain_sizes_available(points: pd.DataFrame) -> bool:
    transferred = points[points["strategy"] != "none"]
    if transferred.empty:
        return False
    return bool((transferred.groupby(["experiment", "strategy"])["pretrain_size"].nunique() > 1).any())


def geometric_grid(low: float, high: float, n: int = 50) -> np.ndarray:
    return np.logspace(np.log10(low), np.log10(high), n)
