"""Replicates: the levels a run's result varies over, and the nested estimates over them.

A replicate is (split seed, pre-trained model, transfer seed); the model is the pre-training seed a
transfer starts from, None for a run that starts from none. Runs over several splits or pre-trained
models are summarised level by level (a mean of split means of model means of seed means) with the
nested bootstrap of ``statistics.nested_difference``, so that an interval covers every level the
runs vary over, and no level counts more because it holds more runs.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from benchmarks.report.statistics import Interval, Replicate, Shares, nested_difference

T = TypeVar("T")
SHARE_LEVELS = ("splits", "models", "seeds", "materials")
RUN_LEVELS = "bootstrap over splits × pre-trained models × seeds"


def model_of(value: object) -> int | None:
    """The pre-trained model of a run (its pre-training seed), None for a run that starts from none."""
    return None if value is None or pd.isna(value) or int(value) < 0 else int(value)  # type: ignore[arg-type]


def spans_levels(*frames: pd.DataFrame) -> bool:
    """Whether the runs span several splits or several pre-trained models (levels above the seeds)."""
    both = pd.concat(frames)
    models = {model_of(v) for v in both["pretrain_seed"]} - {None} if "pretrain_seed" in both else set()
    return ("split_seed" in both and both["split_seed"].nunique() > 1) or len(models) > 1


def _groups(runs: pd.DataFrame) -> pd.core.groupby.DataFrameGroupBy:
    models = (runs["pretrain_seed"].map(lambda value: -1 if model_of(value) is None else model_of(value))
              if "pretrain_seed" in runs else pd.Series(-1, index=runs.index))
    splits = runs["split_seed"] if "split_seed" in runs else pd.Series(0, index=runs.index)  # untagged: split 0
    return runs.groupby([splits.astype(int), models.astype(int), runs["seed"].astype(int)])


def _key(split: int, model: int, seed: int) -> Replicate:
    return int(split), None if model < 0 else int(model), int(seed)


def values_by_replicate(runs: pd.DataFrame, metric: str = "test_mae") -> dict[Replicate, float]:
    """(split, model, seed) -> ``metric`` (several runs of one replicate averaged)."""
    out: dict[Replicate, float] = {}
    for (split, model, seed), group in _groups(runs.dropna(subset=[metric])):
        out[_key(split, model, seed)] = float(group[metric].mean())
    return out


def errors_by_replicate(runs: pd.DataFrame, errors: Mapping[str, pd.Series]) -> dict[Replicate, pd.Series] | None:
    """(split, model, seed) -> absolute test error per material; None when a run logged no predictions."""
    out: dict[Replicate, pd.Series] = {}
    for (split, model, seed), group in _groups(runs):
        ids = [str(r) for r in group["run_id"]]
        if any(run_id not in errors for run_id in ids):
            return None
        out[_key(split, model, seed)] = pd.concat([errors[run_id].abs() for run_id in ids], axis=1).mean(axis=1)
    return out


def matched(a: Mapping[Replicate, T], b: Mapping[Replicate, T]) -> dict[Replicate, tuple[T, T]]:
    """a's replicates paired with b's of the same split and seed and the same model, or of no model (a
    run from scratch serves every model of its split and seed)."""
    out: dict[Replicate, tuple[T, T]] = {}
    for (split, model_a, seed), found_a in a.items():
        for (split_b, model_b, seed_b), found_b in b.items():
            if (split_b, seed_b) == (split, seed) and (model_a is None or model_b is None or model_a == model_b):
                out[(split, model_a if model_a is not None else model_b, seed)] = (found_a, found_b)
    return out


def on_common_materials(found: Mapping[Replicate, tuple[pd.Series, ...]]) -> dict[Replicate, tuple[np.ndarray, ...]]:
    """Each split's replicates restricted to the test materials all of them scored (one split, one test set)."""
    out: dict[Replicate, tuple[np.ndarray, ...]] = {}
    for split in {key[0] for key in found}:
        keys = [key for key in found if key[0] == split]
        materials = sorted(set.intersection(*(set(e.index) for key in keys for e in found[key])))
        for key in keys:
            out[key] = tuple(e.loc[materials].to_numpy() for e in found[key])
    return out


def level_mean(values: Mapping[Replicate, float]) -> float:
    """The mean of split means of model means of seed means (the nested bootstrap's estimate)."""
    splits: dict[int, dict[int | None, list[float]]] = {}
    for (split, model, _), value in values.items():
        splits.setdefault(split, {}).setdefault(model, []).append(value)
    if not splits:
        return math.nan
    return float(np.mean([np.mean([np.mean(seeds) for seeds in models.values()]) for models in splits.values()]))


def shares_detail(row: Any) -> str:
    """ "variance: splits a %, models b %, seeds c %, materials d %" over the levels a comparison row
    varies ("" for a row without shares)."""
    get = row.get if isinstance(row, (pd.Series, dict)) else lambda name, default=math.nan: getattr(row, name, default)
    parts = [f"{level} {100 * float(get(f'share_{level}', math.nan)):.0f} %" for level in SHARE_LEVELS
             if math.isfinite(float(get(f"share_{level}", math.nan)))]
    return "variance: " + ", ".join(parts) if parts else ""


def _over_runs(values: Mapping[Replicate, float]) -> tuple[Interval, Shares]:
    """The nested bootstrap of one value per replicate: no test-material level."""
    interval, shares = nested_difference({key: np.array([value]) for key, value in values.items()})
    if not math.isfinite(interval.low):
        return interval, shares
    return dataclasses.replace(interval, method=RUN_LEVELS), dataclasses.replace(shares, materials=math.nan)


def nested_mae(runs: pd.DataFrame, metric: str = "test_mae",
               errors: Mapping[str, pd.Series] | None = None) -> tuple[Interval, Shares]:
    """A cell's MAE over its replicates, level by level: with the test materials as a level where every
    run logged its predictions (``metric`` test_mae), else over the runs' own values."""
    found = errors_by_replicate(runs, errors) if errors is not None and metric == "test_mae" else None
    if found:
        aligned = on_common_materials({key: (value,) for key, value in found.items()})
        return nested_difference({key: value for key, (value,) in aligned.items()})
    return _over_runs(values_by_replicate(runs, metric))


def nested_run_difference(a_runs: pd.DataFrame, b_runs: pd.DataFrame, metric: str = "test_mae") -> tuple[Interval, Shares]:
    """a − b replicate by replicate on the runs' own values (no predictions: no test-material level)."""
    pairs = matched(values_by_replicate(a_runs, metric), values_by_replicate(b_runs, metric))
    return _over_runs({key: a - b for key, (a, b) in pairs.items()})


def nested_percent(a_runs: pd.DataFrame, b_runs: pd.DataFrame, metric: str = "test_mae") -> Interval:
    """100 × (a / b − 1) replicate by replicate, summarised level by level with its nested bootstrap:
    b's spread enters through each replicate's own ratio."""
    pairs = matched(values_by_replicate(a_runs, metric), values_by_replicate(b_runs, metric))
    ratios = {key: 100.0 * (a / b - 1.0) for key, (a, b) in pairs.items() if b > 0}
    return _over_runs(ratios)[0]
