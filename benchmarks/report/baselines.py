"""The trained runs measured against the baselines: which learned nothing, and what transfer must beat.

A trained run whose test MAE is not below that of the training median fitted on the same training
subset (strategy ``constant``, same target, training size, split and seed) learned nothing a constant
does not: Table 1 flags it and no verdict rests on it (``ConvergenceGate``).
"""

from __future__ import annotations

import pandas as pd

from cgat_dgl.strategies import names

MEDIAN = "constant"  # the registry entry of the training median
REPLICATE = ("target", "profile", "train_size", "seed")  # what a run and its training median share


def median_failures(runs: pd.DataFrame) -> frozenset[str]:
    """The ids of the trained transfer runs whose test MAE is not below their training median's."""
    transfer = runs[runs["kind"] == "transfer"]
    median = transfer[transfer["strategy"] == MEDIAN]
    trained = transfer[~transfer["strategy"].isin(names(is_baseline=True))]
    if median.empty or trained.empty:
        return frozenset()
    reference = median.groupby(list(REPLICATE), dropna=False)["test_mae"].mean().rename("median_mae").reset_index()
    joined = trained.merge(reference, on=list(REPLICATE), how="inner")
    failed = joined[joined["test_mae"] >= joined["median_mae"]]
    return frozenset(failed["run_id"].astype(str))


def needs_no_source_value() -> tuple[str, ...]:
    """The baselines a transfer strategy must beat on equal terms: none needs the source calculation
    of the material it predicts."""
    return tuple(name for name in names(is_baseline=True) if name not in names(needs_source_value=True))


def source_linear_sentences(comparisons: pd.DataFrame) -> list[str]:
    """For each task where full transfer is not measurably better than a linear correction of the
    material's own source value (at its largest training size), a sentence that says so."""
    rows = comparisons[(comparisons["metric"] == "test_mae") & (comparisons["a"] == "full") & (comparisons["b"] == "source_linear")]
    if rows.empty:
        return []
    rows = rows[rows["train_size"] == rows.groupby("experiment")["train_size"].transform("max")]
    sentences = []
    for r in rows.itertuples():
        if r.diff_high < 0:
            continue
        worse = "worse than" if r.diff_low > 0 else "no better than"
        sentences.append(
            f"{r.experiment} ({r.source} → {r.target}, N train {int(r.train_size)}): full transfer (test MAE "
            f"{r.mae_a:.3g}) is {worse} a linear correction of the material's own {r.source} value ({r.mae_b:.3g}; "
            f"difference {r.diff:+.3g} [{r.diff_low:+.3g}, {r.diff_high:+.3g}], n={int(r.n)}). Where the {r.source} "
            "calculation of a material exists, that correction is the better predictor; transfer earns its place "
            "only where it does not."
        )
    return sentences
