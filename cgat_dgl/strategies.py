"""The transfer strategies, each defined once: what it starts from, what it trains and learns, and how
reports name, mark, colour and compare it.

Every list of strategies in the package and the benchmark suite (configuration literals, the
manifest's checks, the run plan, Table 1, the comparisons, the figures) is derived from ``REGISTRY``;
adding a strategy means adding its entry here and the code of its behaviour where ``learns`` or
``starts_from`` asks for it. Standard library only, so that the command-line parsers load no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

# Spelt out for type checkers; tests check it equals the registry's names, in order.
Strategy = Literal["none", "head", "full", "delta", "delta_known", "multifidelity", "multifidelity_ft"]
PaperStrategy = Literal["none", "head", "full"]  # the entries with paper=True
StartsFrom = Literal["scratch", "pretrain", "joint"]
Stage = Literal["scratch", "transfer", "delta"]
Learns = Literal["target", "model_residual", "known_residual"]

BASELINE: Strategy = "none"  # what every transfer is measured against
REFERENCE: Strategy = "full"  # the paper's best, which strategies beyond the paper are measured against


@dataclass(frozen=True)
class StrategySpec:
    name: Strategy
    label: str  # in tables and legends
    # scratch: random weights; pretrain: the source model's weights; joint: the weights of another
    # strategy's run (``requires``) of the same size and seed
    starts_from: StartsFrom
    # the profile's stage settings it trains with: scratch (no transfer lr factor), transfer, or
    # transfer with the target's own normalisation (a correction has other statistics than the source)
    stage: Stage
    color: str  # one line per strategy
    palette: str = "Greys"  # shades over pre-training sizes
    learns: Learns = "target"  # the target, or its residual after the source model / known source value
    head_only: bool = False  # every weight group but the regression head frozen
    multifidelity: bool = False  # a model with a fidelity input, trained on source and target at once
    source_pool: bool = False  # each epoch draws source structures from the pre-training pool
    requires: Strategy | None = None  # the strategy whose runs it starts from
    same_quantity_only: bool = False  # source and target must be one kind of quantity (gap and gap)
    needs_source_value: bool = False  # predicting a material needs its computed source value
    paper: bool = False  # one of the paper's three: offered by `cgat train`/`compare` and tuning
    compared_with: tuple[Strategy, ...] = ()  # the comparisons of the report, this one minus each

    @property
    def from_pretrained(self) -> bool:
        return self.starts_from == "pretrain"


REGISTRY: dict[str, StrategySpec] = {
    spec.name: spec
    for spec in (
        StrategySpec("none", "no transfer", "scratch", "scratch", color="tab:orange", paper=True),
        StrategySpec("head", "only regression head", "pretrain", "transfer", color="tab:green", palette="Greens",
                     head_only=True, paper=True, compared_with=("none",)),
        StrategySpec("full", "full transfer", "pretrain", "transfer", color="tab:blue", palette="Blues", paper=True,
                     compared_with=("none", "head")),
        StrategySpec("delta", "delta learning (source model)", "pretrain", "delta", color="tab:purple",
                     palette="Purples", learns="model_residual", same_quantity_only=True, compared_with=("full",)),
        StrategySpec("delta_known", "delta learning (known source value)", "pretrain", "delta", color="tab:pink",
                     palette="RdPu", learns="known_residual", same_quantity_only=True, needs_source_value=True,
                     compared_with=("full",)),
        StrategySpec("multifidelity", "multi-fidelity joint", "scratch", "scratch", color="tab:red", palette="Reds",
                     multifidelity=True, source_pool=True, same_quantity_only=True, compared_with=("full",)),
        StrategySpec("multifidelity_ft", "multi-fidelity + fine-tuning", "joint", "transfer", color="tab:brown",
                     palette="YlOrBr", multifidelity=True, requires="multifidelity", same_quantity_only=True,
                     compared_with=("full",)),
    )
}
STRATEGIES: tuple[Strategy, ...] = get_args(Strategy)
PAPER_STRATEGIES = tuple(name for name, spec in REGISTRY.items() if spec.paper)


def strategy(name: str) -> StrategySpec:
    """The registry entry of ``name``; an unknown name is an error that lists the known ones."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown strategy {name!r}; known: {', '.join(REGISTRY)}") from None


def names(**where: object) -> tuple[Strategy, ...]:
    """The strategies whose entries have every given field value, in registry order, e.g.
    ``names(starts_from="pretrain")``."""
    return tuple(s.name for s in REGISTRY.values() if all(getattr(s, k) == v for k, v in where.items()))
