"""The transfer strategies, each defined once: what it starts from, what it trains and learns, and how
reports name, mark, colour and compare it.

Every list of strategies in the package and the benchmark suite (the configuration's checks, the
manifest's, the run plan, Table 1, the comparisons, the figures) is read from ``REGISTRY`` when it is
used; adding a strategy means adding its entry here and the code of its behaviour where ``learns``,
``starts_from`` or ``fit`` asks for it. The baselines are strategies too: they train no network but
fit a closed-form predictor on the same training subset (``cgat_dgl.baselines``), so every table and
comparison shows them beside the transfers. Standard library only, so that the command-line parsers
load no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# A registry key; configurations check it against the registry when they are validated, so that an
# entry added at run time (a user's own strategy) is accepted everywhere.
Strategy = str
PaperStrategy = Literal["none", "head", "full"]  # the entries with paper=True
StartsFrom = Literal["scratch", "pretrain", "joint"]
Stage = Literal["scratch", "transfer", "delta"]
Learns = Literal["target", "model_residual", "known_residual"]
# How a baseline predicts, fitted on the training subset alone (cgat_dgl.baselines): the training
# median; the material's source value as is or corrected linearly; a linear model over element
# fractions (per-element reference values); the pre-trained source model unchanged.
Fit = Literal["median", "source_value", "source_linear", "composition_linear", "source_model"]

BASELINE: Strategy = "none"  # what every transfer is measured against
REFERENCE: Strategy = "full"  # the paper's best, which strategies beyond the paper are measured against


DELTA_KNOWN_NOTE = (
    "delta learning (known source value) predicts target − source value and adds the material's known "
    "source value back: it needs the source (e.g. PBE) value of every material it predicts, so it only "
    "applies where that calculation has been done"
)
JOINT_NOTE = (
    "multi-fidelity: N pretrain is the source pool the joint model draws from; each epoch sees every "
    "target training structure and source_ratio times as many source structures drawn from that pool"
)



class UnknownName(KeyError):
    """A lookup of a name that is not there; its message prints as written (a KeyError quotes it)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""

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
    fit: Fit | None = None  # a baseline: no network trained, this closed-form predictor instead
    note: str = ""  # the footnote of its column in Table 1

    @property
    def from_pretrained(self) -> bool:
        return self.starts_from == "pretrain"

    @property
    def is_baseline(self) -> bool:
        return self.fit is not None

    @property
    def target_only(self) -> bool:
        """Its runs depend on the target's data alone, so the experiments that share a target share them."""
        return self.starts_from == "scratch" and not self.source_pool and not self.needs_source_value


REGISTRY: dict[str, StrategySpec] = {
    spec.name: spec
    for spec in (
        StrategySpec("none", "no transfer", "scratch", "scratch", color="tab:orange", paper=True),
        StrategySpec("head", "only regression head", "pretrain", "transfer", color="tab:green", palette="Greens",
                     head_only=True, paper=True, compared_with=("none",)),
        StrategySpec("full", "full transfer", "pretrain", "transfer", color="tab:blue", palette="Blues", paper=True,
                     compared_with=("none", "head", "constant", "zero_shot", "composition_linear", "source_linear")),
        StrategySpec("delta", "delta learning (source model)", "pretrain", "delta", color="tab:purple",
                     palette="Purples", learns="model_residual", same_quantity_only=True, compared_with=("full",)),
        StrategySpec("delta_known", "delta learning (known source value)", "pretrain", "delta", color="tab:pink",
                     palette="RdPu", learns="known_residual", same_quantity_only=True, needs_source_value=True,
                     compared_with=("full",), note=DELTA_KNOWN_NOTE),
        StrategySpec("multifidelity", "multi-fidelity joint", "scratch", "scratch", color="tab:red", palette="Reds",
                     multifidelity=True, source_pool=True, same_quantity_only=True, compared_with=("full",),
                     note=JOINT_NOTE),
        StrategySpec("multifidelity_ft", "multi-fidelity + fine-tuning", "joint", "transfer", color="tab:brown",
                     palette="YlOrBr", multifidelity=True, requires="multifidelity", same_quantity_only=True,
                     compared_with=("full",), note=JOINT_NOTE),
        # Baselines: fitted on the same training subset as the transfers of the same size and seed.
        StrategySpec("constant", "training median", "scratch", "scratch", color="tab:gray", fit="median"),
        StrategySpec("zero_shot", "pre-trained model as is", "pretrain", "transfer", color="tab:olive",
                     fit="source_model", same_quantity_only=True,
                     note="the pre-trained source model's prediction, unchanged, as the target value"),
        StrategySpec("composition_linear", "linear in element fractions", "scratch", "scratch", color="tab:cyan",
                     fit="composition_linear",
                     note="a linear model over the element fractions of the formula, fitted to the training subset by "
                          "least absolute deviations (per-element reference values); elements absent from the training "
                          "subset contribute nothing"),
        StrategySpec("source_value", "source value as is", "scratch", "scratch", color="black", fit="source_value",
                     same_quantity_only=True, needs_source_value=True,
                     note="the material's own computed source (e.g. PBE) value as the target value: it needs that "
                          "calculation for every material it predicts"),
        StrategySpec("source_linear", "source value, linear correction", "scratch", "scratch", color="goldenrod",
                     fit="source_linear", same_quantity_only=True, needs_source_value=True,
                     note="a + b × the material's own computed source value, fitted to the training subset by least "
                          "absolute deviations: it needs that calculation for every material it predicts"),
    )
}
PAPER_STRATEGIES = tuple(name for name, spec in REGISTRY.items() if spec.paper)


def strategies() -> tuple[Strategy, ...]:
    """Every registered strategy, in registry order."""
    return tuple(REGISTRY)


def strategy(name: str) -> StrategySpec:
    """The registry entry of ``name``; an unknown name is an error that lists the known ones."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise UnknownName(f"unknown strategy {name!r}; known: {', '.join(REGISTRY)}") from None


def known_strategy(name: str) -> str:
    """``name`` if it is registered; else a ValueError (for configuration validators) naming the known ones."""
    if name not in REGISTRY:
        raise ValueError(f"unknown strategy {name!r}; known: {', '.join(REGISTRY)}")
    return name


def names(**where: object) -> tuple[Strategy, ...]:
    """The strategies whose entries have every given field value, in registry order, e.g.
    ``names(starts_from="pretrain")``."""
    return tuple(s.name for s in REGISTRY.values() if all(getattr(s, k) == v for k, v in where.items()))
