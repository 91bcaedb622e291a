"""Where to spend extra compute (the paper's Fig. 5): more high-fidelity or more low-fidelity data.

One low-fidelity calculation costs 1 unit and one high-fidelity calculation ``cost_ratio`` units.
With local slopes a = d log MAE / d log N_train and b = d log MAE / d log N_pretrain (both negative),
one more unit of compute lowers log MAE by -a / (cost_ratio * N_train) on the high-fidelity side and by
-b / N_pretrain on the low-fidelity side: the gains are equal at N_pretrain / N_train = cost_ratio * b / a,
and below that ratio extra low-fidelity data helps more.

Two models of the full-transfer MAEs give the slopes:

- per line (the paper's analysis, the main result): each measured (N_train, N_pretrain) point with a
  fitted line in both directions (Fig. 3) is a scenario, extrapolated along its own two lines; the
  break-even ratio is local and its interval comes from refitting the lines seed by seed;
- a plane, log10 MAE = alpha*log10 N_train + beta*log10 N_pretrain + gamma, over all points of an
  experiment: one slope per direction for every size, so one break-even ratio cost_ratio * beta / alpha.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from benchmarks.report.fits import Fit, loglog_fit
from benchmarks.report.scaling import fit_from_row
from benchmarks.report.statistics import Interval, t_interval

DEFAULT_RATIOS = (16.0, 4.0, 1.0)
BUDGET_COLUMNS = (
    "experiment",
    "scenario",
    "target_ratio",
    "start_train_size",
    "start_pretrain_size",
    "spend_on",
    "extra_compute",
    "total_compute",
    "train_size",
    "pretrain_size",
    "mae",
)
SPEND_HIGH = "high-fidelity"
SPEND_LOW = "low-fidelity"


@dataclass(frozen=True)
class PlaneFit:
    """log10 MAE = alpha*log10 N_train + beta*log10 N_pretrain + gamma (standard errors NaN if unknown)."""

    alpha: float
    alpha_se: float
    beta: float
    beta_se: float
    gamma: float
    gamma_se: float
    n: int

    def predict(self, n_train: float | np.ndarray, n_pretrain: float | np.ndarray) -> np.ndarray:
        return 10.0 ** (self.alpha * np.log10(n_train) + self.beta * np.log10(n_pretrain) + self.gamma)

    def break_even_ratio(self, cost_ratio: float) -> float:
        """N_pretrain / N_train at which one unit of compute helps equally on either side."""
        if self.alpha == 0:
            return math.nan
        return cost_ratio * self.beta / self.alpha


@dataclass(frozen=True)
class Scenario:
    name: str
    target_ratio: float
    train_size: int
    pretrain_size: int


def plane_fit(n_train: Sequence[float], n_pretrain: Sequence[float], mae: Sequence[float]) -> PlaneFit:
    """Least squares in log10 space; needs two distinct sizes of each kind and three points."""
    x1 = np.asarray(n_train, dtype=float)
    x2 = np.asarray(n_pretrain, dtype=float)
    y = np.asarray(mae, dtype=float)
    if not (x1.shape == x2.shape == y.shape) or x1.ndim != 1:
        raise ValueError("n_train, n_pretrain and mae must be 1-d and of equal length")
    if np.any(x1 <= 0) or np.any(x2 <= 0) or np.any(y <= 0) or not np.all(np.isfinite([x1, x2, y])):
        raise ValueError("the plane fit needs positive, finite sizes and MAEs")
    if np.unique(x1).size < 2 or np.unique(x2).size < 2:
        raise ValueError(
            f"the plane fit needs two distinct training and pre-training sizes, got "
            f"{np.unique(x1).tolist()} and {np.unique(x2).tolist()}"
        )
    design = np.column_stack([np.log10(x1), np.log10(x2), np.ones_like(x1)])
    ly = np.log10(y)
    coef, _, rank, _ = np.linalg.lstsq(design, ly, rcond=None)
    if rank < 3:
        raise ValueError("the sizes do not span a plane (training and pre-training sizes vary together)")
    dof = y.size - 3
    if dof > 0:
        residual = ly - design @ coef
        sigma2 = float(residual @ residual) / dof
        se = np.sqrt(np.diag(sigma2 * np.linalg.inv(design.T @ design)))
    else:
        se = np.full(3, math.nan)
    return PlaneFit(
        alpha=float(coef[0]),
        alpha_se=float(se[0]),
        beta=float(coef[1]),
        beta_se=float(se[1]),
        gamma=float(coef[2]),
        gamma_se=float(se[2]),
        n=int(y.size),
    )


def choose_scenarios(pairs: pd.DataFrame, ratios: Sequence[float] = DEFAULT_RATIOS) -> list[Scenario]:
    """For each wanted N_pretrain/N_train ratio, the measured (train_size, pretrain_size) pair closest
    to it in log ratio (the larger pair on ties); pairs chosen twice are kept once."""
    measured = pairs[["train_size", "pretrain_size"]].drop_duplicates()
    if measured.empty:
        return []
    log_ratio = np.log10(measured["pretrain_size"].to_numpy(float) / measured["train_size"].to_numpy(float))
    chosen: list[Scenario] = []
    seen: set[tuple[int, int]] = set()
    for ratio in ratios:
        distance = np.round(np.abs(log_ratio - math.log10(ratio)), 9)
        candidates = measured.assign(distance=distance).sort_values(
            ["distance", "train_size", "pretrain_size"], ascending=[True, False, False]
        )
        best = candidates.iloc[0]
        key = (int(best["train_size"]), int(best["pretrain_size"]))
        if key in seen:
            continue
        seen.add(key)
        chosen.append(Scenario(f"{key[1]} pre / {key[0]} train", float(ratio), *key))
    return chosen


def budget_curves(
    plane: PlaneFit,
    scenarios: Sequence[Scenario],
    cost_ratio: float = 5.0,
    max_factor: float = 10.0,
    n_steps: int = 40,
) -> pd.DataFrame:
    """Expected MAE as extra compute (up to ``max_factor`` times a scenario's starting compute) goes
    entirely to high-fidelity or entirely to low-fidelity calculations."""
    if cost_ratio <= 0:
        raise ValueError(f"cost_ratio must be positive, got {cost_ratio}")
    frames = []
    for scenario in scenarios:
        start = scenario.pretrain_size + cost_ratio * scenario.train_size
        extra = np.concatenate([[0.0], np.logspace(np.log10(start / 100), np.log10(start * max_factor), n_steps)])
        for spend_on in (SPEND_HIGH, SPEND_LOW):
            n_train = scenario.train_size + (extra / cost_ratio if spend_on == SPEND_HIGH else 0.0)
            n_pretrain = scenario.pretrain_size + (extra if spend_on == SPEND_LOW else 0.0)
            frames.append(
                pd.DataFrame(
                    {
                        "scenario": scenario.name,
                        "target_ratio": scenario.target_ratio,
                        "start_train_size": scenario.train_size,
                        "start_pretrain_size": scenario.pretrain_size,
                        "spend_on": spend_on,
                        "extra_compute": extra,
                        "total_compute": start + extra,
                        "train_size": np.broadcast_to(n_train, extra.shape).astype(float),
                        "pretrain_size": np.broadcast_to(n_pretrain, extra.shape).astype(float),
                        "mae": plane.predict(n_train, n_pretrain),
                    }
                )
            )
    if not frames:
        return pd.DataFrame(columns=[c for c in BUDGET_COLUMNS if c != "experiment"])
    return pd.concat(frames, ignore_index=True)


def better_option(plane: PlaneFit, scenario: Scenario, cost_ratio: float) -> str:
    """Which side lowers the MAE more for the first extra unit of compute at the scenario's start."""
    gain_high = -plane.alpha / (cost_ratio * scenario.train_size)
    gain_low = -plane.beta / scenario.pretrain_size
    if math.isclose(gain_high, gain_low, rel_tol=0.05):
        return "about equal"
    return SPEND_HIGH if gain_high > gain_low else SPEND_LOW


# --- per-line analysis (the paper's Fig. 5) ----------------------------------------------------------
#
# The paper extrapolates each scenario along its own fitted lines (Fig. 3): extra high-fidelity data
# moves along the MAE-against-training-size line at the scenario's pre-training size, extra
# low-fidelity data along the MAE-against-pre-training-size line at the scenario's training size. The
# slopes therefore differ from scenario to scenario (they change slightly with the pre-training size),
# which the plane above cannot show.

LINE_STRATEGY = "full"
ABOUT_EQUAL_TOL = 0.05
ABOUT_EQUAL = "about equal"
NEITHER = "neither"
MODEL_LINES = "lines"
MODEL_PLANE = "plane"
CURVE_COLUMNS = (*BUDGET_COLUMNS, "model", "start_mae")
LINE_SUMMARY_COLUMNS = (
    "experiment",
    "strategy",
    "scenario",
    "target_ratio",
    "train_size",
    "pretrain_size",
    "ratio",
    "mae_start",
    "mae_start_train_line",
    "mae_start_pretrain_line",
    "slope_train",
    "slope_train_se",
    "slope_pretrain",
    "slope_pretrain_se",
    "break_even",
    "break_even_seed_mean",
    "break_even_low",
    "break_even_high",
    "n_seeds",
    "n_seeds_no_ratio",
    "seeds_no_ratio",
    "n_seeds_incomplete",
    "better_first_step",
    "mae_doubled_high",
    "mae_doubled_low",
    "note",
)
SEED_COLUMNS = ("seed", "slope_train", "slope_pretrain", "break_even", "reason")


@dataclass(frozen=True)
class LineScenario:
    """A measured (N_train, N_pretrain) point with a fitted line through it in each direction.

    ``train_fit``: MAE against training size at this pre-training size; ``pretrain_fit``: MAE against
    pre-training size at this training size. ``target_ratio`` is the wanted N_pretrain/N_train this
    scenario was chosen for (figure), NaN when it was not chosen."""

    experiment: str
    strategy: str
    train_size: int
    pretrain_size: int
    start_mae: float
    train_fit: Fit
    pretrain_fit: Fit
    train_sizes: tuple[int, ...]  # the training sizes the train-size line was fitted on
    pretrain_sizes: tuple[int, ...]  # the pre-training sizes the pretrain-size line was fitted on
    target_ratio: float = math.nan

    @property
    def name(self) -> str:
        return f"{self.pretrain_size} pre / {self.train_size} train"

    @property
    def ratio(self) -> float:
        return self.pretrain_size / self.train_size

    def start_compute(self, cost_ratio: float) -> float:
        return self.pretrain_size + cost_ratio * self.train_size

    def predict_high(self, extra: float | np.ndarray, cost_ratio: float) -> np.ndarray:
        """MAE when ``extra`` compute buys high-fidelity calculations (train-size line)."""
        return np.asarray(self.train_fit.predict(self.train_size + np.asarray(extra, float) / cost_ratio))

    def predict_low(self, extra: float | np.ndarray) -> np.ndarray:
        """MAE when ``extra`` compute buys low-fidelity calculations (pretrain-size line)."""
        return np.asarray(self.pretrain_fit.predict(self.pretrain_size + np.asarray(extra, float)))


def local_break_even(slope_train: float, slope_pretrain: float, cost_ratio: float) -> float:
    """N_pretrain / N_train at which one unit of compute lowers log MAE equally on either side:
    cost_ratio * b / a with a = d log MAE / d log N_train, b = d log MAE / d log N_pretrain.

    Only defined when both slopes are negative (both kinds of data help); NaN otherwise."""
    if cost_ratio <= 0:
        raise ValueError(f"cost_ratio must be positive, got {cost_ratio}")
    if not (math.isfinite(slope_train) and math.isfinite(slope_pretrain)):
        return math.nan
    if slope_train >= 0 or slope_pretrain >= 0:
        return math.nan
    return cost_ratio * slope_pretrain / slope_train


def no_ratio_reason(slope_train: float, slope_pretrain: float) -> str:
    """Why ``local_break_even`` gives no finite ratio ("" when it does)."""
    reasons = []
    if not math.isfinite(slope_train) or slope_train >= 0:
        reasons.append(f"slope over training size {slope_train:+.3g} is not negative")
    if not math.isfinite(slope_pretrain) or slope_pretrain >= 0:
        reasons.append(f"slope over pre-training size {slope_pretrain:+.3g} is not negative")
    return " and ".join(reasons)


def first_step(
    slope_train: float, slope_pretrain: float, train_size: float, pretrain_size: float, cost_ratio: float
) -> str:
    """Which side lowers log MAE more for the first extra unit of compute: high-fidelity gains
    -a / (cost_ratio * N_train), low-fidelity -b / N_pretrain per unit."""
    gain_high = -slope_train / (cost_ratio * train_size)
    gain_low = -slope_pretrain / pretrain_size
    if gain_high <= 0 and gain_low <= 0:
        return NEITHER
    if math.isclose(gain_high, gain_low, rel_tol=ABOUT_EQUAL_TOL):
        return ABOUT_EQUAL
    return SPEND_HIGH if gain_high > gain_low else SPEND_LOW


def _line_fit(row: pd.Series) -> Fit:
    fit = fit_from_row(row)
    assert fit is not None, "_line_row returns fitted rows only"
    return fit


def _line_row(fits: pd.DataFrame, experiment: str, strategy: str, x: str, at: str, size: int) -> pd.Series | None:
    found = fits[
        (fits["x"] == x)
        & (fits["experiment"] == experiment)
        & (fits["strategy"] == strategy)
        & (pd.to_numeric(fits[at], errors="coerce") == size)
    ]
    found = found[np.isfinite(pd.to_numeric(found["slope"], errors="coerce").to_numpy(float))]
    return found.iloc[0] if len(found) else None


@dataclass(frozen=True)
class NotAScenario:
    """A measured full-transfer point lacking one or both lines, and why."""

    experiment: str
    train_size: int
    pretrain_size: int
    reason: str


def line_scenarios(
    points: pd.DataFrame,
    fits: pd.DataFrame,
    experiment: str,
    ratios: Sequence[float] = DEFAULT_RATIOS,
    strategy: str = LINE_STRATEGY,
) -> tuple[list[LineScenario], list[NotAScenario]]:
    """Every measured (N_train, N_pretrain) point of ``strategy`` in ``experiment`` that has both a
    fitted line over training size (at its N_pretrain) and over pre-training size (at its N_train),
    sorted by size; the points that lack a line, with the reason. Scenarios closest to the wanted
    ``ratios`` (see ``choose_scenarios``) get that ratio as ``target_ratio``."""
    exp_points = points[(points["experiment"] == experiment) & (points["strategy"] == strategy)]
    pairs = exp_points[["train_size", "pretrain_size"]].drop_duplicates().sort_values(["train_size", "pretrain_size"])
    found: list[LineScenario] = []
    missing: list[NotAScenario] = []
    for n_train, n_pretrain in pairs.itertuples(index=False):
        n_train, n_pretrain = int(n_train), int(n_pretrain)
        train_row = _line_row(fits, experiment, strategy, "train_size", "pretrain_size", n_pretrain)
        pretrain_row = _line_row(fits, experiment, strategy, "pretrain_size", "train_size", n_train)
        lacking = []
        if train_row is None:
            lacking.append(f"no line over training size at pre-training size {n_pretrain}")
        if pretrain_row is None:
            lacking.append(f"no line over pre-training size at training size {n_train}")
        if lacking:
            missing.append(NotAScenario(experiment, n_train, n_pretrain, " and ".join(lacking)))
            continue
        start = exp_points[(exp_points["train_size"] == n_train) & (exp_points["pretrain_size"] == n_pretrain)]
        found.append(
            LineScenario(
                experiment=experiment,
                strategy=strategy,
                train_size=n_train,
                pretrain_size=n_pretrain,
                start_mae=float(start["mae_mean"].iloc[0]),
                train_fit=_line_fit(train_row),
                pretrain_fit=_line_fit(pretrain_row),
                train_sizes=tuple(
                    int(t) for t in sorted(exp_points.loc[exp_points["pretrain_size"] == n_pretrain, "train_size"])
                ),
                pretrain_sizes=tuple(
                    int(p) for p in sorted(exp_points.loc[exp_points["train_size"] == n_train, "pretrain_size"])
                ),
            )
        )
    if found and ratios:
        frame = pd.DataFrame(
            {"train_size": [s.train_size for s in found], "pretrain_size": [s.pretrain_size for s in found]}
        )
        wanted = {(c.train_size, c.pretrain_size): c.target_ratio for c in choose_scenarios(frame, ratios)}
        found = [
            replace(s, target_ratio=wanted.get((s.train_size, s.pretrain_size), math.nan)) for s in found
        ]
    return found, missing


@dataclass(frozen=True)
class SeedBreakEven:
    """The break-even ratio of each seed's own two lines, and the t-interval of their log10 over seeds.

    ``per_seed``: one row per seed present at every point of both lines (``SEED_COLUMNS``; ``reason``
    says why a seed has no finite ratio). ``incomplete``: seeds that miss at least one of those points.
    ``log_interval``: t-interval of log10(break-even) over the seeds with a finite ratio."""

    per_seed: pd.DataFrame
    incomplete: tuple[int, ...]
    log_interval: Interval

    @property
    def no_ratio(self) -> pd.DataFrame:
        return self.per_seed[~np.isfinite(self.per_seed["break_even"].to_numpy(float))]

    @property
    def n(self) -> int:
        return self.log_interval.n

    @property
    def mean(self) -> float:
        return 10.0**self.log_interval.mean if math.isfinite(self.log_interval.mean) else math.nan

    @property
    def low(self) -> float:
        return 10.0**self.log_interval.low if self.log_interval.known else math.nan

    @property
    def high(self) -> float:
        return 10.0**self.log_interval.high if self.log_interval.known else math.nan


def seed_break_even(
    runs: pd.DataFrame, scenario: LineScenario, cost_ratio: float, metric: str = "test_mae"
) -> SeedBreakEven:
    """Refit both lines of ``scenario`` on each seed's own runs and take each seed's break-even ratio.

    A seed counts when it has a finite, positive ``metric`` at every (N_train, N_pretrain) point the two
    mean lines were fitted on (several runs of one seed at one point are averaged)."""
    needed = {(t, scenario.pretrain_size) for t in scenario.train_sizes}
    needed |= {(scenario.train_size, p) for p in scenario.pretrain_sizes}
    selected = runs[
        (runs["kind"] == "transfer")
        & (runs["experiment"] == scenario.experiment)
        & (runs["strategy"] == scenario.strategy)
    ]
    values = pd.to_numeric(selected[metric], errors="coerce")
    selected = selected.assign(_value=values)[np.isfinite(values.to_numpy(float)) & (values.to_numpy(float) > 0)]
    keys = list(zip(selected["train_size"].astype(int), selected["pretrain_size"].astype(int)))
    selected = selected[[k in needed for k in keys]]
    per_point = selected.groupby(["seed", "train_size", "pretrain_size"])["_value"].mean()
    rows: list[dict[str, object]] = []
    incomplete: list[int] = []
    for seed in sorted(selected["seed"].unique()):
        mae = per_point.loc[seed]
        have = {(int(t), int(p)) for t, p in mae.index}
        if not needed <= have:
            incomplete.append(int(seed))
            continue
        train_line = [mae.loc[(t, scenario.pretrain_size)] for t in scenario.train_sizes]
        pretrain_line = [mae.loc[(scenario.train_size, p)] for p in scenario.pretrain_sizes]
        slope_train = loglog_fit(list(scenario.train_sizes), train_line).slope
        slope_pretrain = loglog_fit(list(scenario.pretrain_sizes), pretrain_line).slope
        rows.append(
            {
                "seed": int(seed),
                "slope_train": slope_train,
                "slope_pretrain": slope_pretrain,
                "break_even": local_break_even(slope_train, slope_pretrain, cost_ratio),
                "reason": no_ratio_reason(slope_train, slope_pretrain),
            }
        )
    per_seed = pd.DataFrame(rows, columns=list(SEED_COLUMNS))
    ratios = per_seed["break_even"].to_numpy(float)
    log_ratios = np.log10(ratios[np.isfinite(ratios)])
    return SeedBreakEven(per_seed, tuple(incomplete), t_interval(log_ratios))


def line_curves(
    scenarios: Sequence[LineScenario], cost_ratio: float = 5.0, max_factor: float = 10.0, n_steps: int = 40
) -> pd.DataFrame:
    """Expected MAE along each scenario's own lines as extra compute (up to ``max_factor`` times the
    starting compute) goes entirely to high-fidelity or entirely to low-fidelity calculations.
    Columns ``CURVE_COLUMNS`` (model "lines"; ``start_mae`` is the measured seed mean at the start)."""
    if cost_ratio <= 0:
        raise ValueError(f"cost_ratio must be positive, got {cost_ratio}")
    frames = []
    for s in scenarios:
        start = s.start_compute(cost_ratio)
        extra = np.concatenate([[0.0], np.logspace(np.log10(start / 100), np.log10(start * max_factor), n_steps)])
        for spend_on in (SPEND_HIGH, SPEND_LOW):
            high = spend_on == SPEND_HIGH
            frames.append(
                pd.DataFrame(
                    {
                        "experiment": s.experiment,
                        "scenario": s.name,
                        "target_ratio": s.target_ratio,
                        "start_train_size": s.train_size,
                        "start_pretrain_size": s.pretrain_size,
                        "spend_on": spend_on,
                        "extra_compute": extra,
                        "total_compute": start + extra,
                        "train_size": s.train_size + (extra / cost_ratio if high else 0.0),
                        "pretrain_size": s.pretrain_size + (0.0 if high else extra),
                        "mae": s.predict_high(extra, cost_ratio) if high else s.predict_low(extra),
                        "model": MODEL_LINES,
                        "start_mae": s.start_mae,
                    }
                )
            )
    if not frames:
        return pd.DataFrame(columns=list(CURVE_COLUMNS))
    return pd.concat(frames, ignore_index=True)[list(CURVE_COLUMNS)]


def line_summary_row(
    scenario: LineScenario, seeds: SeedBreakEven | None, cost_ratio: float
) -> dict[str, object]:
    """One row of ``LINE_SUMMARY_COLUMNS``: break-even ratio, first step, and the MAE after spending the
    starting compute once more on either side."""
    a, b = scenario.train_fit.slope, scenario.pretrain_fit.slope
    extra = scenario.start_compute(cost_ratio)
    break_even = local_break_even(a, b, cost_ratio)
    notes = []
    if not math.isfinite(break_even):
        notes.append(f"no break-even ratio from the mean lines: {no_ratio_reason(a, b)}")
    no_ratio = seeds.no_ratio if seeds is not None else pd.DataFrame(columns=list(SEED_COLUMNS))
    return {
        "experiment": scenario.experiment,
        "strategy": scenario.strategy,
        "scenario": scenario.name,
        "target_ratio": scenario.target_ratio,
        "train_size": scenario.train_size,
        "pretrain_size": scenario.pretrain_size,
        "ratio": scenario.ratio,
        "mae_start": scenario.start_mae,
        "mae_start_train_line": float(scenario.predict_high(0.0, cost_ratio)),
        "mae_start_pretrain_line": float(scenario.predict_low(0.0)),
        "slope_train": a,
        "slope_train_se": scenario.train_fit.slope_se,
        "slope_pretrain": b,
        "slope_pretrain_se": scenario.pretrain_fit.slope_se,
        "break_even": break_even,
        "break_even_seed_mean": seeds.mean if seeds is not None else math.nan,
        "break_even_low": seeds.low if seeds is not None else math.nan,
        "break_even_high": seeds.high if seeds is not None else math.nan,
        "n_seeds": seeds.n if seeds is not None else 0,
        "n_seeds_no_ratio": int(len(no_ratio)),
        "seeds_no_ratio": ",".join(str(int(s)) for s in no_ratio["seed"]),
        "n_seeds_incomplete": len(seeds.incomplete) if seeds is not None else 0,
        "better_first_step": first_step(a, b, scenario.train_size, scenario.pretrain_size, cost_ratio),
        "mae_doubled_high": float(scenario.predict_high(extra, cost_ratio)),
        "mae_doubled_low": float(scenario.predict_low(extra)),
        "note": "; ".join(notes),
    }
