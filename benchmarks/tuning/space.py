"""The search space of a study (learning rate, weight decay) and its sampler and pruner."""

from __future__ import annotations

from dataclasses import dataclass

import optuna

from benchmarks.manifest import StudySpec

# The paper's ablation grid for inter-property transfer (section II).
PAPER_LR = (1.25e-5, 1.25e-6)
PAPER_WEIGHT_DECAY = (1e-2, 1e-3, 1e-4)


class StudyConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Range:
    low: float
    high: float


@dataclass(frozen=True)
class SearchSpace:
    """A log-uniform range per parameter, or for the grid sampler the values to try."""

    lr: Range | tuple[float, ...]
    weight_decay: Range | tuple[float, ...]

    @classmethod
    def from_spec(cls, spec: StudySpec) -> "SearchSpace":
        grid = spec.sampler == "grid"
        return cls(
            lr=_dimension(spec, "lr", spec.lr, grid),
            weight_decay=_dimension(spec, "weight_decay", spec.weight_decay, grid),
        )

    @property
    def is_grid(self) -> bool:
        return not isinstance(self.lr, Range)

    @property
    def grid(self) -> dict[str, list[float]]:
        if not self.is_grid:
            raise StudyConfigError("a log-uniform search space has no grid")
        return {"lr": list(self.lr), "weight_decay": list(self.weight_decay)}  # type: ignore[arg-type]

    @property
    def grid_size(self) -> int | None:
        return len(self.lr) * len(self.weight_decay) if self.is_grid else None  # type: ignore[arg-type]

    def suggest(self, trial: optuna.Trial) -> tuple[float, float]:
        return _suggest(trial, "lr", self.lr), _suggest(trial, "weight_decay", self.weight_decay)


def _dimension(
    spec: StudySpec, name: str, value: tuple[float, float] | list[float], grid: bool
) -> Range | tuple[float, ...]:
    values = [float(v) for v in value]
    if grid:
        if not values or len(set(values)) != len(values):
            raise StudyConfigError(f"study {spec.name!r}: {name} needs distinct grid values, got {values}")
        return tuple(values)
    # Sampled dimensions are log-uniform: two bounds, both positive (a weight decay of 0 has no log).
    if len(values) != 2:
        raise StudyConfigError(
            f"study {spec.name!r}: {name} must be a range [low, high] for the {spec.sampler} sampler, "
            f"got {values} (a list of values needs sampler: grid)"
        )
    low, high = values
    if not 0 < low < high:
        raise StudyConfigError(f"study {spec.name!r}: {name} range needs 0 < low < high, got [{low}, {high}]")
    return Range(low, high)


def _suggest(trial: optuna.Trial, name: str, dimension: Range | tuple[float, ...]) -> float:
    if isinstance(dimension, Range):
        return trial.suggest_float(name, dimension.low, dimension.high, log=True)
    # GridSampler supplies the value; a log float distribution over the grid's span (rather than a
    # categorical one) keeps grid and sampled studies comparable in the same plots. A grid holding 0
    # (weight decay off) has no log scale: a linear one then.
    return trial.suggest_float(name, min(dimension), max(dimension), log=min(dimension) > 0)


def make_sampler(spec: StudySpec, space: SearchSpace) -> optuna.samplers.BaseSampler:
    if spec.sampler == "grid":
        return optuna.samplers.GridSampler(space.grid, seed=spec.seed)
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=spec.seed)
    # Few startup trials: a study here has tens of trials, not hundreds.
    return optuna.samplers.TPESampler(seed=spec.seed, n_startup_trials=min(10, max(2, spec.n_trials // 3)))


def make_pruner(spec: StudySpec, epochs: int) -> optuna.pruners.BasePruner:
    """The study's pruner; steps are epochs, the reported value is the validation MAE."""
    if spec.pruner == "none":
        return optuna.pruners.NopPruner()
    if spec.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs, reduction_factor=3)
    # The first epochs (a cyclical schedule at 0.1 x lr, a warm-up) say little about a setting.
    return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=epochs // 5)
