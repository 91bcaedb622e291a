"""The strategy registry: one entry per strategy, and every list of strategies derived from it."""

from __future__ import annotations

from typing import get_args

import pytest

from cgat_dgl.strategies import (
    BASELINE,
    PAPER_STRATEGIES,
    REFERENCE,
    REGISTRY,
    STRATEGIES,
    PaperStrategy,
    Strategy,
    names,
    strategy,
)


def test_the_type_literals_name_the_registry_entries_in_order() -> None:
    assert get_args(Strategy) == tuple(REGISTRY) == STRATEGIES
    assert get_args(PaperStrategy) == PAPER_STRATEGIES == ("none", "head", "full")
    assert BASELINE in REGISTRY and REFERENCE in REGISTRY


def test_every_entry_is_consistent() -> None:
    for name, entry in REGISTRY.items():
        assert entry.name == name
        # a strategy that starts from another's runs names it, and only such a strategy does
        assert (entry.starts_from == "joint") == (entry.requires is not None), name
        if entry.requires is not None:
            assert REGISTRY[entry.requires].multifidelity == entry.multifidelity
        assert all(other in REGISTRY and other != name for other in entry.compared_with), name
        # learning a residual of the source model needs the source model
        if entry.learns == "model_residual":
            assert entry.from_pretrained, name
        if entry.learns == "known_residual":
            assert entry.needs_source_value, name
        assert not (entry.head_only and not entry.from_pretrained), name
    assert len({entry.label for entry in REGISTRY.values()}) == len(REGISTRY)
    assert len({entry.color for entry in REGISTRY.values()}) == len(REGISTRY)


def test_an_unknown_strategy_is_named_with_the_known_ones() -> None:
    with pytest.raises(KeyError, match="unknown strategy 'fll'; known: none, head, full"):
        strategy("fll")


def test_the_lists_of_the_suite_come_from_the_registry() -> None:
    from benchmarks.manifest import SAME_QUANTITY_STRATEGIES
    from benchmarks.plan import MULTIFIDELITY
    from benchmarks.report.comparisons import PAIRS
    from benchmarks.report.figures import STRATEGY_COLORS
    from benchmarks.report.tables import JOINT_STRATEGIES, NEEDS_SOURCE_VALUE, PRETRAINED_STRATEGIES, STRATEGY_LABELS
    from cgat_dgl.training.config import FROM_SCRATCH

    assert FROM_SCRATCH == ("none", "multifidelity")
    assert PRETRAINED_STRATEGIES == ("head", "full", "delta", "delta_known") == names(starts_from="pretrain")
    assert JOINT_STRATEGIES == MULTIFIDELITY == ("multifidelity", "multifidelity_ft")
    assert SAME_QUANTITY_STRATEGIES == ("delta", "delta_known", "multifidelity", "multifidelity_ft")
    assert NEEDS_SOURCE_VALUE == ("delta_known",)
    assert set(PAIRS) == {("full", "none"), ("head", "none"), ("full", "head"), ("delta", "full"),
                          ("delta_known", "full"), ("multifidelity", "full"), ("multifidelity_ft", "full")}
    assert set(STRATEGY_LABELS) == {*REGISTRY, "pretrain"} and set(STRATEGY_COLORS) == {*REGISTRY, "pretrain"}
