"""Where to spend extra compute (the paper's Fig. 5): more high-fidelity or more low-fidelity data.

Full-transfer MAEs are fitted as a plane, log10 MAE = alpha*log10 N_train + beta*log10 N_pretrain + gamma.
One low-fidelity calculation costs 1 unit and one high-fidelity calculation ``cost_ratio`` units.
Extra low-fidelity data reduces the error faster per unit of compute while
N_pretrain / N_train < cost_ratio * beta / alpha (equal marginal gains at equality).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

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
