"""Log-log fits, the sizes read off them, the extrapolation table and the compute-budget model."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from benchmarks.report.budget import (
    SPEND_HIGH,
    SPEND_LOW,
    Scenario,
    better_option,
    budget_curves,
    choose_scenarios,
    plane_fit,
)
from benchmarks.report.fits import (
    Fit,
    crossing_estimate,
    crossing_size,
    loglog_fit,
    size_to_reach,
    size_to_reach_estimate,
)
from benchmarks.report.scaling import extrapolations, fit_table

SIZES = np.array([100.0, 300.0, 1000.0, 3000.0, 10000.0])


def test_exact_power_law_is_recovered_exactly() -> None:
    fit = loglog_fit(SIZES, 10**0.5 * SIZES**-0.3)
    assert fit.slope == pytest.approx(-0.3, abs=1e-12)
    assert fit.intercept == pytest.approx(0.5, abs=1e-12)
    assert fit.slope_se == pytest.approx(0.0, abs=1e-10)
    assert fit.n == 5
    assert fit.predict(2000.0) == pytest.approx(10**0.5 * 2000.0**-0.3)


def test_noisy_power_law_is_within_the_reported_uncertainty() -> None:
    rng = np.random.default_rng(7)
    x = np.logspace(2, 5, 25)
    y = 10**1.2 * x**-0.35 * 10 ** rng.normal(0.0, 0.05, x.size)
    fit = loglog_fit(x, y)
    assert fit.has_uncertainty and fit.slope_se > 0 and fit.intercept_se > 0
    assert abs(fit.slope + 0.35) < 3 * fit.slope_se
    assert abs(fit.intercept - 1.2) < 3 * fit.intercept_se


def test_standard_errors_are_calibrated() -> None:
    """About 68% of fits on fresh noise land within one reported standard error of the truth."""
    rng = np.random.default_rng(11)
    x = np.logspace(2, 4, 8)
    hits = 0
    trials = 400
    for _ in range(trials):
        fit = loglog_fit(x, 3.0 * x**-0.25 * 10 ** rng.normal(0.0, 0.03, x.size))
        hits += abs(fit.slope + 0.25) < fit.slope_se
    # one-se coverage of a t-distributed estimate with 6 dof is ~64%
    assert 0.55 < hits / trials < 0.75


def test_two_sizes_give_an_exact_line_without_uncertainty() -> None:
    fit = loglog_fit([100, 1000, 1000], [1.0, 0.5, 0.5])
    assert fit.slope == pytest.approx(math.log10(0.5))
    assert math.isnan(fit.slope_se) and math.isnan(fit.intercept_se)
    assert not fit.has_uncertainty
    assert "no uncertainty" in fit.label()


@pytest.mark.parametrize(
    ("x", "y", "message"),
    [
        ([100, 100], [1.0, 2.0], "two distinct"),
        ([0, 100], [1.0, 2.0], "positive"),
        ([10, 100], [1.0, -2.0], "positive"),
    ],
)
def test_bad_input_is_refused(x: list[float], y: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        loglog_fit(x, y)


def test_crossing_of_known_lines() -> None:
    steep = Fit(slope=-0.4, slope_se=math.nan, intercept=1.0, intercept_se=math.nan, n=2)
    shallow = Fit(slope=-0.2, slope_se=math.nan, intercept=0.4, intercept_se=math.nan, n=2)
    # -0.4 L + 1 = -0.2 L + 0.4  ->  L = 3
    assert crossing_size(steep, shallow) == pytest.approx(1000.0)
    assert crossing_size(shallow, steep) == pytest.approx(1000.0)
    assert crossing_size(steep, steep) is None


def test_size_to_reach_on_a_known_line() -> None:
    line = Fit(slope=-0.5, slope_se=math.nan, intercept=1.0, intercept_se=math.nan, n=2)
    assert size_to_reach(line, 0.1) == pytest.approx(1e4)
    flat = Fit(slope=0.0, slope_se=math.nan, intercept=1.0, intercept_se=math.nan, n=2)
    assert size_to_reach(flat, 0.1) is None
    with pytest.raises(ValueError):
        size_to_reach(line, 0.0)


def test_propagated_ranges_bracket_the_estimates() -> None:
    rng = np.random.default_rng(3)
    none_fit = loglog_fit(SIZES, 10 * SIZES**-0.4 * 10 ** rng.normal(0, 0.02, SIZES.size))
    full_fit = loglog_fit(SIZES, 10**0.4 * SIZES**-0.2 * 10 ** rng.normal(0, 0.02, SIZES.size))
    crossing = crossing_estimate(none_fit, full_fit)
    assert crossing is not None and crossing.low < crossing.value < crossing.high
    reach = size_to_reach_estimate(none_fit, 0.2)
    assert reach is not None and reach.low < reach.value < reach.high
    # the correlation of slope and intercept narrows the range compared with treating them as independent
    assert none_fit.cov_slope_intercept < 0


def _points(lines: dict[str, tuple[float, float]], sizes: list[int]) -> pd.DataFrame:
    rows = []
    for strategy, (slope, intercept) in lines.items():
        for n in sizes:
            rows.append(
                {
                    "experiment": "e",
                    "source": "a_pbe",
                    "target": "a_hse",
                    "strategy": strategy,
                    "pretrain_size": 0 if strategy == "none" else 5000,
                    "train_size": n,
                    "mae_mean": 10 ** (slope * math.log10(n) + intercept),
                    "mae_std": math.nan,
                    "n_seeds": 1,
                }
            )
    return pd.DataFrame(rows)


def test_extrapolations_of_known_lines() -> None:
    points = _points({"none": (-0.4, 1.0), "full": (-0.2, 0.4)}, [10, 30, 100])
    fits = fit_table(points)
    assert set(fits["x"]) == {"train_size"} and len(fits) == 2
    row = extrapolations(points, fits).iloc[0]
    assert row["crossing_train_size"] == pytest.approx(1000.0)
    best = 10 ** (-0.2 * 2 + 0.4)  # full transfer at N = 100
    assert row["best_mae"] == pytest.approx(best)
    assert row["best_train_size"] == 100
    # no transfer reaches it where -0.4 L + 1 = log10(best)
    assert row["none_size_to_match"] == pytest.approx(10 ** ((math.log10(best) - 1.0) / -0.4))
    assert row["match_factor"] == pytest.approx(row["none_size_to_match"] / 100)


def test_diverging_lines_report_no_crossing() -> None:
    points = _points({"none": (-0.2, 0.5), "full": (-0.4, 0.5)}, [10, 30, 100])
    row = extrapolations(points, fit_table(points)).iloc[0]
    assert math.isnan(row["crossing_train_size"])
    assert row["crossing_note"].startswith("no crossing")


def test_one_training_size_is_reported_not_fitted() -> None:
    points = _points({"none": (-0.4, 1.0), "full": (-0.2, 0.4)}, [100])
    fits = fit_table(points)
    assert fits["slope"].isna().all()
    assert fits["note"].str.contains("only one train size").all()
    row = extrapolations(points, fits).iloc[0]
    assert row["crossing_note"].startswith("not computed")


ALPHA, BETA, GAMMA = -0.3, -0.15, 0.2


def _plane_grid(noise: float = 0.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    train, pretrain = np.meshgrid([500.0, 2000.0, 8000.0], [4000.0, 16000.0, 64000.0, 128000.0])
    train, pretrain = train.ravel(), pretrain.ravel()
    mae = 10 ** (ALPHA * np.log10(train) + BETA * np.log10(pretrain) + GAMMA + rng.normal(0, noise, train.size))
    return train, pretrain, mae


def test_plane_fit_recovers_a_synthetic_plane() -> None:
    plane = plane_fit(*_plane_grid())
    assert (plane.alpha, plane.beta, plane.gamma) == pytest.approx((ALPHA, BETA, GAMMA), abs=1e-10)
    noisy = plane_fit(*_plane_grid(noise=0.02, seed=5))
    assert abs(noisy.alpha - ALPHA) < 3 * noisy.alpha_se
    assert abs(noisy.beta - BETA) < 3 * noisy.beta_se
    assert abs(noisy.gamma - GAMMA) < 3 * noisy.gamma_se


def test_plane_fit_needs_two_sizes_of_each_kind() -> None:
    with pytest.raises(ValueError, match="two distinct"):
        plane_fit([100, 200, 400], [1000, 1000, 1000], [1.0, 0.9, 0.8])


def test_budget_choices_follow_the_break_even_ratio() -> None:
    plane = plane_fit(*_plane_grid())
    cost = 5.0
    assert plane.break_even_ratio(cost) == pytest.approx(cost * BETA / ALPHA)  # 2.5
    # far more pre-training than training data: extra high-fidelity calculations help more
    assert better_option(plane, Scenario("s", 16, 1000, 16000), cost) == SPEND_HIGH
    assert better_option(plane, Scenario("s", 1, 1000, 1000), cost) == SPEND_LOW


def test_scenarios_start_at_the_closest_measured_pairs() -> None:
    train, pretrain, _ = _plane_grid()
    pairs = pd.DataFrame({"train_size": train, "pretrain_size": pretrain})
    scenarios = choose_scenarios(pairs, (16.0, 1.0, 1.1))
    # ratio 16 is measured exactly; ratio 1 ties between 2 and 0.5, and the larger pair wins;
    # 1.1 lands on the same pair and is not repeated
    assert [(s.train_size, s.pretrain_size) for s in scenarios] == [(8000, 128000), (8000, 16000)]


def test_budget_curves_spend_compute_on_one_side() -> None:
    plane = plane_fit(*_plane_grid())
    scenario = Scenario("s", 4.0, 2000, 8000)
    curves = budget_curves(plane, [scenario], cost_ratio=5.0)
    start = curves[curves["extra_compute"] == 0]
    assert len(start) == 2
    assert start["mae"].to_numpy() == pytest.approx(float(plane.predict(2000, 8000)))
    high = curves[curves["spend_on"] == SPEND_HIGH]
    low = curves[curves["spend_on"] == SPEND_LOW]
    assert high["train_size"].to_numpy() == pytest.approx(2000 + high["extra_compute"].to_numpy() / 5.0)
    assert (high["pretrain_size"] == 8000).all() and (low["train_size"] == 2000).all()
    assert low["pretrain_size"].to_numpy() == pytest.approx(8000 + low["extra_compute"].to_numpy())
    assert high["total_compute"].to_numpy() == pytest.approx(8000 + 5.0 * 2000 + high["extra_compute"].to_numpy())
    assert (np.diff(high["mae"].to_numpy()) < 0).all()
