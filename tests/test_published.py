"""The report's side of the comparison with published models, read from Table 1."""

from __future__ import annotations

import math

import pandas as pd

from benchmarks.report.published import PUBLISHED, published_comparison, published_markdown


def _row(experiment: str, strategy: str, prop: str, mae: float, train_size: int = 100) -> dict[str, object]:
    return {"experiment": experiment, "metric": "test_mae", "strategy": strategy, "property": prop,
            "train_size": train_size, "mae_mean": mae, "mae_low": mae - 0.01, "mae_high": mae + 0.01, "n_seeds": 3}


def test_each_target_shows_its_best_strategy_without_the_source_value_and_the_best_of_all() -> None:
    table = pd.DataFrame([
        _row("gap_hse", "pretrain", "gap_pbe", 0.40, train_size=28000),
        _row("gap_hse", "none", "gap_hse", 0.70),
        _row("gap_hse", "full", "gap_hse", 0.50),
        _row("gap_hse", "source_linear", "gap_hse", 0.30),
        _row("gap_hse", "delta_known", "gap_hse", 0.35),
        {**_row("gap_hse", "head", "gap_hse", 0.10), "metric": "test_mae_gap_above_0.1"},  # a subset: not compared
    ])
    frame = published_comparison(table)
    ours = frame[frame["origin"] == "this report"].set_index("property")
    gap_hse = frame[(frame["origin"] == "this report") & (frame["property"] == "gap_hse")]
    assert list(gap_hse["test_mae"]) == [0.50, 0.30]
    assert list(gap_hse["needs_source_value"]) == [False, True]
    assert "full transfer" in gap_hse["model"].iloc[0]
    assert ours.loc["gap_pbe", "test_mae"] == 0.40 and ours.loc["gap_pbe", "train_size"] == 28000
    # properties without a run in Table 1 are left out, with their published rows
    assert set(frame["property"]) == {"gap_pbe", "gap_hse"}
    published = frame[frame["origin"] == "published"]
    assert len(published) == sum(p.prop in {"gap_pbe", "gap_hse"} for p in PUBLISHED)
    assert published["n"].map(math.isnan).all()
    text = published_markdown(frame)
    assert "| gap_hse (eV) | **best without the source value: full transfer** | 0.5 [0.49, 0.51] [n=3] | no |" in text


def test_the_best_of_all_is_not_repeated_when_it_needs_no_source_value() -> None:
    table = pd.DataFrame([_row("r2", "full", "e_form_r2scan", 0.05), _row("r2", "source_linear", "e_form_r2scan", 0.15)])
    ours = published_comparison(table).query("origin == 'this report'")
    assert list(ours["test_mae"]) == [0.05]


def test_of_two_experiments_sharing_a_cell_the_one_with_more_runs_is_shown() -> None:
    """A pre-training-size study's largest pool repeats the intra-property task on fewer runs (one
    pre-trained model): its lower mean is a subset's luck, not a better strategy."""
    table = pd.DataFrame([{**_row("r2", "full", "e_form_r2scan", 0.043), "n_seeds": 6, "pretrain_size": 28000},
                          {**_row("r2_size", "full", "e_form_r2scan", 0.040), "pretrain_size": 28000}])
    ours = published_comparison(table).query("origin == 'this report'")
    assert list(ours["test_mae"]) == [0.043] and list(ours["n"]) == [6]


def test_an_empty_table_gives_no_comparison() -> None:
    assert published_comparison(pd.DataFrame(columns=["metric", "property", "strategy", "mae_mean"])).empty
