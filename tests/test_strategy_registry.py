"""The strategy registry: one entry per strategy, and every list of strategies derived from it."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import pytest

from cgat_dgl.strategies import (
    BASELINE,
    PAPER_STRATEGIES,
    REFERENCE,
    REGISTRY,
    PaperStrategy,
    StrategySpec,
    names,
    strategies,
    strategy,
)
from test_runner import small_data  # noqa: F401  (a fixture)
from smoke_manifests import smoke_options
from test_strategies import manifest_for


def test_the_registry_order_and_the_paper_strategies() -> None:
    assert strategies() == tuple(REGISTRY)
    assert strategies()[:3] == ("none", "head", "full")
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
        if entry.is_baseline:  # fitted, not trained: nothing of a network's training applies
            assert entry.learns == "target" and not (entry.head_only or entry.multifidelity or entry.source_pool), name
            assert (entry.fit == "source_model") == entry.from_pretrained, name
            assert (entry.fit in ("source_value", "source_linear")) == entry.needs_source_value, name
    assert len({entry.label for entry in REGISTRY.values()}) == len(REGISTRY)
    assert len({entry.color for entry in REGISTRY.values()}) == len(REGISTRY)


def test_an_unknown_strategy_is_named_with_the_known_ones() -> None:
    with pytest.raises(KeyError, match="unknown strategy 'fll'; known: none, head, full"):
        strategy("fll")


def test_the_lists_of_the_suite_come_from_the_registry() -> None:
    from benchmarks.report.baselines import needs_no_source_value
    from benchmarks.report.comparisons import pairs
    from benchmarks.report.figures import strategy_color
    from benchmarks.report.tables import joint_strategies, pretrained_strategies, strategy_label, target_only_strategies

    assert names(starts_from="scratch", is_baseline=False) == ("none", "multifidelity")
    assert pretrained_strategies() == ("head", "full", "delta", "delta_known", "zero_shot")
    assert joint_strategies() == ("multifidelity", "multifidelity_ft")
    assert names(same_quantity_only=True) == (
        "delta", "delta_known", "multifidelity", "multifidelity_ft", "zero_shot", "source_value", "source_linear"
    )  # fmt: skip
    assert names(needs_source_value=True) == ("delta_known", "source_value", "source_linear")
    assert target_only_strategies() == ("none", "constant", "composition_linear")
    assert needs_no_source_value() == ("constant", "zero_shot", "composition_linear")
    assert set(pairs()) == {("full", "none"), ("head", "none"), ("full", "head"), ("delta", "full"),
                            ("delta_known", "full"), ("multifidelity", "full"), ("multifidelity_ft", "full"),
                            ("full", "constant"), ("full", "zero_shot"), ("full", "composition_linear"),
                            ("full", "source_linear")}  # fmt: skip
    assert all(strategy_label(name) == entry.label and strategy_color(name) == entry.color for name, entry in REGISTRY.items())
    assert strategy_color("pretrain") not in {entry.color for entry in REGISTRY.values()}


def test_configurations_accept_registered_strategies_only(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from benchmarks.manifest import ManifestError, load_manifest
    from cgat_dgl.training.config import TrainConfig

    assert TrainConfig(strategy="constant").strategy == "constant"
    with pytest.raises(ValidationError, match="unknown strategy 'fll'"):
        TrainConfig(strategy="fll")
    from benchmarks.compare import CompareOptions

    # `cgat compare` is a manifest: it runs any registered strategy, and refuses an unknown one
    assert CompareOptions(data_path="x", source="gap_pbe", target="gap_hse", strategies=["delta"]).strategies == ["delta"]
    with pytest.raises(ValidationError, match="unknown strategy 'fll'"):
        CompareOptions(data_path="x", source="gap_pbe", target="gap_hse", strategies=["fll"])
    path = tmp_path / "experiments.yaml"
    path.write_text(
        "profiles: {p: {model: smoke}}\n"
        "experiments:\n  - {name: e, source: gap_pbe, target: gap_hse, strategies: [none, fll]}\n"
    )
    with pytest.raises(ManifestError, match=r"experiments\.yaml:3: experiments\.0\.strategies\.1: .*unknown strategy 'fll'"):
        load_manifest(path)


def test_a_baseline_is_fitted_not_trained() -> None:
    from cgat_dgl.model import ModelConfig
    from cgat_dgl.training.config import TrainConfig
    from cgat_dgl.training.trainer import train

    with pytest.raises(ValueError, match="'constant' is a baseline"):
        train(ModelConfig.preset("smoke"), TrainConfig(strategy="constant"), [], [], None, out_dir=Path("unused"))


TOY = StrategySpec("toy", "toy: the training median again", "scratch", "scratch", color="tab:olive",
                   fit="median", compared_with=("none",))
@pytest.mark.slow
def test_a_strategy_added_by_one_entry_is_planned_run_tabulated_and_compared(
    tmp_path: Path, small_data: Path, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    from benchmarks.plan import expand
    from benchmarks.report import collect_runs
    from benchmarks.report.comparisons import comparison_table
    from benchmarks.report.tables import table1, table1_markdown
    from benchmarks.runner import Runner

    monkeypatch.setitem(REGISTRY, "toy", TOY)
    manifest = manifest_for(tmp_path, strategies="[none, toy]", sizes="[1.0]")  # seeds 0 and 1
    _, transfers = expand(manifest, "smoke")
    assert sorted((r.strategy, r.seed) for r in transfers) == [("none", 0), ("none", 1), ("toy", 0), ("toy", 1)]
    options = smoke_options(tmp_path, small_data)
    outcome = Runner(manifest, options).run()
    assert not outcome.failed and len(outcome.done) == 4
    runs, _ = collect_runs(options.tracking_uri)
    toy = runs[runs["strategy"] == "toy"]
    assert len(toy) == 2 and set(toy["stop_reason"]) == {"fitted"}
    table = table1(runs)
    assert list(table["strategy"]) == ["none", "toy"]
    assert "toy: the training median again" in table1_markdown(table)
    compared = comparison_table(runs)
    row = compared[(compared["a"] == "toy") & (compared["b"] == "none")].iloc[0]
    assert row["n"] == 2
    by_seed = toy.set_index("seed")["test_mae"] - runs[runs["strategy"] == "none"].set_index("seed")["test_mae"]
    assert row["diff"] == pytest.approx(by_seed.mean())
