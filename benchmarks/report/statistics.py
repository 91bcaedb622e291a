"""Intervals and verdicts: how sure the report can be of a mean, a difference and a claim.

Every interval is two-sided at ``LEVEL`` (95 %). Over seeds it is Student's t-interval of the mean,
over test materials a percentile bootstrap. A claim's verdict compares an interval with zero (or with a
stated range): only an interval entirely on one side says ``reproduced`` or ``contradicted``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
from scipy import stats

LEVEL = 0.95
BOOTSTRAP_SAMPLES = 2000
REPRODUCED = "reproduced"
CONTRADICTED = "contradicted"
INCONCLUSIVE = "inconclusive"
# The runs behind a check had not finished learning (``convergence.ConvergenceGate``): whatever its
# interval says, it is no evidence on the claim yet.
NOT_CONVERGED = "not converged"
VERDICTS = (REPRODUCED, CONTRADICTED, NOT_CONVERGED, INCONCLUSIVE)


@dataclass(frozen=True)
class Interval:
    """A mean (or point estimate) with its two-sided interval; ``method`` says how it was obtained."""

    mean: float
    low: float
    high: float
    n: int
    method: str  # "t over seeds", "bootstrap over materials", or "" when no interval exists

    @property
    def known(self) -> bool:
        return math.isfinite(self.low) and math.isfinite(self.high)

    def excludes_zero(self) -> bool:
        return self.known and (self.low > 0 or self.high < 0)


def unknown(mean: float = math.nan, n: int = 0) -> Interval:
    return Interval(mean, math.nan, math.nan, n, "")


def t_interval(values: Sequence[float] | np.ndarray, level: float = LEVEL) -> Interval:
    """Mean of ``values`` with Student's t-interval; no interval from fewer than two finite values."""
    data = np.asarray(values, dtype=float)
    data = data[np.isfinite(data)]
    if data.size == 0:
        return unknown()
    mean = float(data.mean())
    if data.size < 2:
        return unknown(mean, 1)
    half = float(stats.t.ppf(0.5 + level / 2, data.size - 1) * data.std(ddof=1) / math.sqrt(data.size))
    return Interval(mean, mean - half, mean + half, int(data.size), "t over seeds")


def paired_difference(a: dict[int, float], b: dict[int, float], level: float = LEVEL) -> Interval:
    """Mean of a - b over the seeds both have (same seed: same split, same training subset)."""
    seeds = sorted(set(a) & set(b))
    return t_interval([a[s] - b[s] for s in seeds], level)


def bootstrap_mae_difference(
    errors_a: np.ndarray,
    errors_b: np.ndarray,
    seed: int = 0,
    samples: int = BOOTSTRAP_SAMPLES,
    level: float = LEVEL,
) -> Interval:
    """MAE(a) - MAE(b) over the same test materials (absolute errors aligned by material), with a
    percentile bootstrap that resamples materials: the interval of one seed's test-set noise."""
    ea = np.abs(np.asarray(errors_a, dtype=float))
    eb = np.abs(np.asarray(errors_b, dtype=float))
    if ea.shape != eb.shape or ea.ndim != 1:
        raise ValueError(f"the two error vectors must be 1-d and aligned, got shapes {ea.shape} and {eb.shape}")
    if ea.size == 0:
        return unknown()
    diff = ea - eb
    mean = float(diff.mean())
    if ea.size < 2:
        return unknown(mean, int(ea.size))
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, diff.size, size=(samples, diff.size))
    means = diff[draws].mean(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return Interval(mean, float(low), float(high), int(ea.size), "bootstrap over materials")


def relative(interval: Interval, base: float) -> Interval:
    """The interval as a percentage of ``base`` (for "x % lower MAE than no transfer")."""
    if not math.isfinite(base) or base <= 0:
        return unknown(math.nan, interval.n)
    scale = 100.0 / base
    return Interval(interval.mean * scale, interval.low * scale, interval.high * scale, interval.n, interval.method)


def sign_verdict(interval: Interval, expected: str) -> str:
    """``expected`` is "negative" or "positive": the sign the paper's finding predicts."""
    if expected not in ("negative", "positive"):
        raise ValueError(f"expected must be 'negative' or 'positive', got {expected!r}")
    if not interval.excludes_zero():
        return INCONCLUSIVE
    observed = "negative" if interval.high < 0 else "positive"
    return REPRODUCED if observed == expected else CONTRADICTED


def range_verdict(interval: Interval, low: float, high: float) -> str:
    """Reproduced when the whole interval lies in [low, high], contradicted when it lies entirely
    outside it, inconclusive otherwise (or when no interval exists)."""
    if not interval.known:
        return INCONCLUSIVE
    if low <= interval.low and interval.high <= high:
        return REPRODUCED
    if interval.high < low or interval.low > high:
        return CONTRADICTED
    return INCONCLUSIVE


def combine_verdicts(verdicts: Sequence[str]) -> str:
    """A claim checked on several tasks:

    - ``contradicted`` if any task contradicts it: that check's runs converged (else it would be
      ``not converged``), and further training of the other tasks' runs cannot undo it;
    - else ``not converged`` if any task's runs had not finished learning: the evidence is not final,
      so the claim can be neither reproduced nor called inconclusive on it;
    - else ``reproduced`` only if every task reproduces it, ``inconclusive`` otherwise (or no task).
    """
    if not verdicts:
        return INCONCLUSIVE
    if CONTRADICTED in verdicts:
        return CONTRADICTED
    if NOT_CONVERGED in verdicts:
        return NOT_CONVERGED
    if all(v == REPRODUCED for v in verdicts):
        return REPRODUCED
    return INCONCLUSIVE


def p_value(interval: Interval, boundary: float = 0.0, level: float = LEVEL) -> float:
    """Two-sided p-value of ``interval.mean`` against ``boundary``, recovered from the interval: Student's
    t with n - 1 degrees of freedom for a t-interval over seeds, the normal approximation otherwise
    (a bootstrap interval). NaN where there is no interval."""
    if not interval.known or interval.high <= interval.low:
        return math.nan
    t_based = interval.method == "t over seeds" and interval.n >= 2
    quantile = stats.t.ppf(0.5 + level / 2, interval.n - 1) if t_based else stats.norm.ppf(0.5 + level / 2)
    se = (interval.high - interval.low) / (2.0 * quantile)
    statistic = abs(interval.mean - boundary) / se
    return float(2.0 * (stats.t.sf(statistic, interval.n - 1) if t_based else stats.norm.sf(statistic)))


def holm_rejected(p_values: Sequence[float], alpha: float = 1.0 - LEVEL) -> list[bool]:
    """Holm's step-down procedure over one family: which hypotheses are rejected at family-wise error
    ``alpha`` (a NaN p-value is never rejected and does not count in the family)."""
    finite = sorted((p, i) for i, p in enumerate(p_values) if math.isfinite(p))
    rejected = [False] * len(p_values)
    m = len(finite)
    for rank, (p, index) in enumerate(finite):
        if p > alpha / (m - rank):
            break
        rejected[index] = True
    return rejected


def ratio_percent(a: dict[int, float], b: dict[int, float], level: float = LEVEL) -> Interval:
    """100 × (a / b − 1) seed by seed, with the t-interval of its mean over the seeds both have: the
    spread of the baseline b enters through each seed's own ratio, not through one mean denominator."""
    seeds = [s for s in sorted(set(a) & set(b)) if b[s] > 0]
    return t_interval([100.0 * (a[s] / b[s] - 1.0) for s in seeds], level)


@dataclass(frozen=True)
class LackOfFit:
    """The lack-of-fit F-test of a straight line through replicated points: the scatter of the size
    means about the line against the scatter of the replicates about their means."""

    sizes: int  # distinct x values
    points: int
    f: float
    p: float  # NaN where the test is undefined (fewer than 3 sizes, or no replicate spread)

    @property
    def curved(self) -> bool:
        return math.isfinite(self.p) and self.p < 1.0 - LEVEL


def lack_of_fit(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> LackOfFit:
    """Lack-of-fit test of ``y = a + b x`` by least squares over every (x, y) replicate."""
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(xs) & np.isfinite(ys)
    xs, ys = xs[keep], ys[keep]
    levels = np.unique(xs)
    k, n = len(levels), len(xs)
    if k < 3 or n <= k:
        return LackOfFit(k, n, math.nan, math.nan)
    slope, intercept = np.polyfit(xs, ys, 1)
    means = {level: ys[xs == level].mean() for level in levels}
    pure = float(sum(((ys[xs == level] - means[level]) ** 2).sum() for level in levels))
    misfit = float(sum((xs == level).sum() * (means[level] - (intercept + slope * level)) ** 2 for level in levels))
    if pure <= 0:
        return LackOfFit(k, n, math.nan, math.nan)
    f = (misfit / (k - 2)) / (pure / (n - k))
    return LackOfFit(k, n, float(f), float(stats.f.sf(f, k - 2, n - k)))


HIERARCHICAL = "bootstrap over seeds × test materials"


NESTED = "bootstrap over splits × pre-trained models × seeds × test materials"


@dataclass(frozen=True)
class Shares:
    """How much of a difference's sampling variance comes from each source it is resampled over (NaN:
    a source the data do not vary)."""

    seeds: float
    materials: float
    splits: float = math.nan
    models: float = math.nan


UNKNOWN_SHARES = Shares(math.nan, math.nan)


def hierarchical_difference(
    errors_a: dict[int, np.ndarray], errors_b: dict[int, np.ndarray], seed: int = 0,
    samples: int = BOOTSTRAP_SAMPLES, level: float = LEVEL,
) -> tuple[Interval, Shares]:
    """MAE(a) − MAE(b) with a two-level bootstrap: the seeds both have are resampled, and so are the test
    materials (crossed with the seeds: every seed scored the same materials, so one draw of materials
    serves all seeds of a replicate). ``errors_*``: seed -> absolute errors aligned by material. The
    shares: each source's bootstrap variance when it alone is resampled, over their sum."""
    common = sorted(set(errors_a) & set(errors_b))
    if not common:
        return unknown(), UNKNOWN_SHARES
    d = np.stack([np.abs(errors_a[s]) - np.abs(errors_b[s]) for s in common])  # seeds × materials
    return _seeds_by_materials(d, seed, samples, level)


def _seeds_by_materials(d: np.ndarray, seed: int, samples: int, level: float) -> tuple[Interval, Shares]:
    """The two-level bootstrap of ``hierarchical_difference`` on differences ``d`` (seeds × materials)."""
    mean = float(d.mean())
    n_seeds, n_materials = d.shape
    if n_seeds < 2 or n_materials < 2:
        return unknown(mean, n_seeds), UNKNOWN_SHARES
    rng = np.random.default_rng(seed)
    seed_draws = rng.integers(0, n_seeds, size=(samples, n_seeds))
    material_draws = rng.integers(0, n_materials, size=(samples, n_materials))
    by_seed, by_material = d.mean(axis=1), d.mean(axis=0)
    both = np.array([d[np.ix_(s, m)].mean() for s, m in zip(seed_draws, material_draws)])
    tail = (1 - level) / 2
    low, high = np.quantile(both, [tail, 1 - tail])
    var_seeds = float(by_seed[seed_draws].mean(axis=1).var())
    var_materials = float(by_material[material_draws].mean(axis=1).var())
    total = var_seeds + var_materials
    shares = Shares(var_seeds / total, var_materials / total) if total > 0 else UNKNOWN_SHARES
    return Interval(mean, float(low), float(high), n_seeds, HIERARCHICAL), shares


# A replicate of a comparison: (split seed, pre-trained model, transfer seed). The model is the
# pre-training seed, None for a run that starts from no pre-trained model.
Replicate = tuple[int, Optional[int], int]


def nested_difference(
    differences: dict[Replicate, np.ndarray], seed: int = 0, samples: int = BOOTSTRAP_SAMPLES, level: float = LEVEL
) -> tuple[Interval, Shares]:
    """MAE(a) − MAE(b) from per-replicate differences of absolute errors (aligned by material within a
    split; each split has its own test set), with a nested bootstrap: splits are resampled, the
    pre-trained models within a split, the transfer seeds within a model, and each drawn split's test
    materials (crossed with its replicates). The estimate weights each level equally (a mean of split
    means of model means of seed means). With one split and one model it is ``hierarchical_difference``.
    Shares: each level's bootstrap variance when it alone is resampled, over their sum."""
    tree: dict[int, dict[int | None, list[int]]] = {}
    for split, model, replicate_seed in sorted(differences, key=lambda key: (key[0], -1 if key[1] is None else key[1], key[2])):
        tree.setdefault(split, {}).setdefault(model, []).append(replicate_seed)
    if not tree:
        return unknown(), UNKNOWN_SHARES
    if len(tree) == 1:
        (split, models), = tree.items()
        if len(models) == 1:
            (model, seeds), = models.items()
            return _seeds_by_materials(np.stack([differences[split, model, s] for s in seeds]), seed, samples, level)
    rng = np.random.default_rng(seed)
    splits = sorted(tree)
    unit_means = {key: float(np.mean(values)) for key, values in differences.items()}

    def estimate(split_draw: Sequence[int], model_draw: Callable[[int], list[int | None]],
                 seed_draw: Callable[[int, int | None], list[int]], means: Callable[[int], dict[Replicate, float]]) -> float:
        per_split = []
        for split in split_draw:
            unit = means(split)
            per_model = [float(np.mean([unit[split, model, s] for s in seed_draw(split, model)])) for model in model_draw(split)]
            per_split.append(float(np.mean(per_model)))
        return float(np.mean(per_split))

    def fixed_models(split: int) -> list[int | None]:
        return list(tree[split])

    def fixed_seeds(split: int, model: int | None) -> list[int]:
        return tree[split][model]

    def fixed_means(split: int) -> dict[Replicate, float]:
        return unit_means

    def drawn(values: Sequence[Any]) -> list[Any]:
        return [values[i] for i in rng.integers(0, len(values), size=len(values))]

    def material_means(split: int) -> dict[Replicate, float]:
        keys = [(split, model, s) for model, seeds in tree[split].items() for s in seeds]
        n = len(differences[keys[0]])
        draw = rng.integers(0, n, size=n)
        return {key: float(differences[key][draw].mean()) for key in keys}

    def drawn_models(split: int) -> list[int | None]:
        return drawn(list(tree[split]))

    def drawn_seeds(split: int, model: int | None) -> list[int]:
        return drawn(tree[split][model])

    mean = estimate(splits, fixed_models, fixed_seeds, fixed_means)
    n = len(differences)
    if n < 2:
        return unknown(mean, n), UNKNOWN_SHARES
    both = np.array([estimate(drawn(splits), drawn_models, drawn_seeds, material_means) for _ in range(samples)])
    tail = (1 - level) / 2
    low, high = np.quantile(both, [tail, 1 - tail])
    variances = {
        "splits": np.var([estimate(drawn(splits), fixed_models, fixed_seeds, fixed_means) for _ in range(samples)]),
        "models": np.var([estimate(splits, drawn_models, fixed_seeds, fixed_means) for _ in range(samples)]),
        "seeds": np.var([estimate(splits, fixed_models, drawn_seeds, fixed_means) for _ in range(samples)]),
        "materials": np.var([estimate(splits, fixed_models, fixed_seeds, material_means) for _ in range(samples)]),
    }
    varied = {
        "splits": len(splits) > 1,
        "models": any(len(models) > 1 for models in tree.values()),
        "seeds": any(len(seeds) > 1 for models in tree.values() for seeds in models.values()),
        "materials": True,
    }
    total = float(sum(variances.values()))
    shares = (Shares(**{name: float(v) / total if varied[name] else math.nan for name, v in variances.items()})
              if total > 0 else UNKNOWN_SHARES)
    return Interval(mean, float(low), float(high), n, NESTED), shares
