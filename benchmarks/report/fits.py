"""Straight-line fits in log10-log10 space and what can be read off them.

MAE against dataset size follows a power law (MAE = 10**intercept * N**slope), so every fit here is
ordinary least squares of log10(MAE) on log10(N). Standard errors come from the residuals and need at
least three distinct sizes; with two the line is exact and its uncertainty unknown (NaN).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

MIN_POINTS_FOR_SE = 3


@dataclass(frozen=True)
class Fit:
    """log10(y) = slope * log10(x) + intercept, with standard errors (NaN when unknown)."""

    slope: float
    slope_se: float
    intercept: float
    intercept_se: float
    n: int
    # Covariance of slope and intercept: they are strongly correlated when log10(x) is far from 0,
    # which matters when propagating both into an extrapolated size.
    cov_slope_intercept: float = math.nan

    @property
    def has_uncertainty(self) -> bool:
        return math.isfinite(self.slope_se) and math.isfinite(self.intercept_se)

    def predict(self, x: float | np.ndarray) -> float | np.ndarray:
        return 10.0 ** (self.slope * np.log10(x) + self.intercept)

    def label(self) -> str:
        if self.has_uncertainty:
            return (
                f"slope {self.slope:.3f} ± {self.slope_se:.3f}, "
                f"intercept {self.intercept:.2f} ± {self.intercept_se:.2f}"
            )
        return f"slope {self.slope:.3f}, intercept {self.intercept:.2f} (n={self.n}, no uncertainty)"


@dataclass(frozen=True)
class Estimate:
    """A size read off fitted lines, with a one-standard-error range (NaN when not propagated)."""

    value: float
    low: float = math.nan
    high: float = math.nan


def loglog_fit(x: np.ndarray | list[float], y: np.ndarray | list[float]) -> Fit:
    """Least-squares line through (log10 x, log10 y); needs two distinct x and positive values."""
    xs = np.asarray(x, dtype=float)
    ys = np.asarray(y, dtype=float)
    if xs.shape != ys.shape or xs.ndim != 1:
        raise ValueError(f"x and y must be 1-d arrays of equal length, got shapes {xs.shape} and {ys.shape}")
    if not (np.all(np.isfinite(xs)) and np.all(np.isfinite(ys))):
        raise ValueError("x and y must be finite")
    if np.any(xs <= 0) or np.any(ys <= 0):
        raise ValueError("a log-log fit needs positive x and y")
    if np.unique(xs).size < 2:
        raise ValueError(f"a fit needs at least two distinct x values, got {np.unique(xs).tolist()}")
    lx, ly = np.log10(xs), np.log10(ys)
    result = stats.linregress(lx, ly)
    if np.unique(xs).size < MIN_POINTS_FOR_SE:
        return Fit(float(result.slope), math.nan, float(result.intercept), math.nan, int(xs.size))
    slope_se = float(result.stderr)
    # cov(slope, intercept) of ordinary least squares = -mean(x) * var(slope)
    return Fit(
        slope=float(result.slope),
        slope_se=slope_se,
        intercept=float(result.intercept),
        intercept_se=float(result.intercept_stderr),
        n=int(xs.size),
        cov_slope_intercept=float(-lx.mean() * slope_se**2),
    )


def _covariance(fit: Fit) -> np.ndarray:
    return np.array(
        [[fit.slope_se**2, fit.cov_slope_intercept], [fit.cov_slope_intercept, fit.intercept_se**2]]
    )


def _with_range(log_value: float, grads: list[tuple[Fit, np.ndarray]]) -> Estimate:
    """First-order propagation of the fits' covariances into log10 of the estimate."""
    if not all(fit.has_uncertainty and math.isfinite(fit.cov_slope_intercept) for fit, _ in grads):
        return Estimate(10.0**log_value)
    variance = sum(float(g @ _covariance(fit) @ g) for fit, g in grads)
    se = math.sqrt(max(variance, 0.0))
    return Estimate(10.0**log_value, 10.0 ** (log_value - se), 10.0 ** (log_value + se))


def crossing_estimate(fit_a: Fit, fit_b: Fit, after: float = 0.0) -> Estimate | None:
    """Where two fitted lines meet, if they meet at a size beyond ``after``.

    None when the lines are parallel, or when they met only below ``after`` and therefore move apart
    from there on (for example no transfer and full transfer when transfer gains more per sample).
    """
    d_slope = fit_a.slope - fit_b.slope
    if d_slope == 0.0:
        return None
    d_intercept = fit_b.intercept - fit_a.intercept
    log_n = d_intercept / d_slope
    if after > 0 and log_n <= math.log10(after):
        return None
    # gradients of log_n with respect to (slope, intercept) of each fit
    grad_a = np.array([-d_intercept / d_slope**2, -1.0 / d_slope])
    grad_b = np.array([d_intercept / d_slope**2, 1.0 / d_slope])
    return _with_range(log_n, [(fit_a, grad_a), (fit_b, grad_b)])


def crossing_size(fit_a: Fit, fit_b: Fit, after: float = 0.0) -> float | None:
    """The size at which the two power laws give the same MAE (see ``crossing_estimate``)."""
    found = crossing_estimate(fit_a, fit_b, after)
    return None if found is None else found.value


def size_to_reach_estimate(fit: Fit, mae: float) -> Estimate | None:
    """The size at which the fitted line reaches ``mae``; None when the MAE does not fall with size."""
    if mae <= 0:
        raise ValueError(f"target MAE must be positive, got {mae}")
    if fit.slope >= 0:
        return None
    offset = math.log10(mae) - fit.intercept
    log_n = offset / fit.slope
    grad = np.array([-offset / fit.slope**2, -1.0 / fit.slope])
    return _with_range(log_n, [(fit, grad)])


def size_to_reach(fit: Fit, mae: float) -> float | None:
    """The size at which the fitted line reaches ``mae`` (see ``size_to_reach_estimate``)."""
    found = size_to_reach_estimate(fit, mae)
    return None if found is None else found.value
