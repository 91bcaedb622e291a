"""Expansion of a manifest into the runs it asks for, each with a stable key.

A pre-training run is identified by everything that determines its weights (property, size, seed,
model and stage settings, split seed, the data file and the properties whose validation and test
materials it must not see), so every transfer run that needs the same one shares it. Every key also
holds the results version (``results_version``: this package's version and torch's and dgl's), so a
store written by other code or packages is not taken for this code's results.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from benchmarks.manifest import Experiment, Manifest, Profile, Size, StageSpec, Strategy
from cgat_dgl import numerics
from cgat_dgl.data.leakage import protected_candidates
from cgat_dgl.training.multifidelity import N_FIDELITIES
from cgat_dgl.strategies import UnknownName, strategy

KEY_VERSION = 1
# What decides whether a stored result is still this code's: the package version (bumped whenever a
# change alters results) and the versions of the packages that compute them. Not the git commit, or
# every commit would invalidate every run.
RESULTS_PACKAGES = ("cgat_dgl", "torch", "dgl")


def results_version() -> dict[str, str]:
    """The versions a run key holds: ``cgat_dgl.__version__`` and the torch and dgl versions."""
    from cgat_dgl.versions import software_versions

    versions = software_versions()
    return {name: versions.get(name, "absent") for name in RESULTS_PACKAGES}


def _digest(payload: dict[str, Any]) -> str:
    text = json.dumps({"v": KEY_VERSION, "versions": results_version(), **payload}, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def pretrain_identity(spec: "PretrainRun") -> dict[str, Any]:
    """What selects a pre-training's data and initialisation: property, size, seed, protected
    properties, data file, size cap and split seed (its model and training settings apart)."""
    payload = asdict(spec)
    for name in ("profile", "model", "stage", "kind"):
        payload.pop(name)
    payload["protected"] = list(payload["protected"])
    return payload


@dataclass(frozen=True)
class PretrainRun:
    profile: str
    prop: str
    size: Size
    seed: int
    model: dict[str, Any] = field(hash=False, compare=False)
    stage: dict[str, Any] = field(hash=False, compare=False)
    # The properties whose val/test materials are excluded (protected_candidates: those the data lacks
    # protect nothing, and the data key tells which it has).
    protected: tuple[str, ...] = ()
    data_key: str = ""
    cap: int | None = None
    split_seed: int = 0  # the 80/10/10 split (data.split_seed, or cgat-bench run --split-seed)
    numerics: str = ""  # what decides the bits of its results (cgat_dgl.numerics.key)

    kind: Literal["pretrain"] = "pretrain"

    @property
    def key(self) -> str:
        payload = asdict(self)
        payload.pop("profile")  # two profiles with identical settings may share a run
        return "pre-" + _digest(payload)

    @property
    def label(self) -> str:
        return f"pretrain {self.prop} size={_size_text(self.size, self.cap)} seed={self.seed}"


@dataclass(frozen=True)
class TransferRun:
    profile: str
    experiment: str
    source: str
    target: str
    task_type: str
    strategy: Strategy
    train_size: Size
    seed: int
    model: dict[str, Any] = field(hash=False, compare=False)
    stage: dict[str, Any] = field(hash=False, compare=False)
    pretrain: PretrainRun | None = None
    subsets_above: dict[str, float] = field(default_factory=dict, hash=False, compare=False)
    data_key: str = ""
    cap: int | None = None
    eval_cap: int | None = None
    split_seed: int = 0
    # multifidelity: the pre-training run whose training set is the source pool (its weights are not
    # used), and the source structures per target structure in an epoch
    source_pool: PretrainRun | None = None
    source_ratio: float | None = None
    # multifidelity_ft: the joint run whose weights it fine-tunes
    joint: "TransferRun | None" = None
    suite: str = field(default="paper", hash=False, compare=False)  # a grouping, not part of the key
    # only target materials above this value (train, validation and test)
    target_above: float | None = None
    # the other experiments that ask for this very run (the same settings and data): it trains once
    also: tuple[str, ...] = field(default=(), hash=False, compare=False)
    numerics: str = ""  # what decides the bits of its results (cgat_dgl.numerics.key)

    kind: Literal["transfer"] = "transfer"

    @property
    def experiments(self) -> tuple[str, ...]:
        return (self.experiment, *self.also)

    @property
    def key(self) -> str:
        # what was trained on which data, not which experiments ask for it
        payload = asdict(self)
        for name in ("profile", "suite", "experiment", "also"):
            payload.pop(name)
        payload["pretrain"] = self.pretrain.key if self.pretrain else None
        # fields of the newer strategies stay out of the keys of the others, which keep their keys
        for name, spec in (("source_pool", self.source_pool), ("joint", self.joint)):
            if spec is None:
                payload.pop(name)
            else:
                payload[name] = spec.key
        for name in ("source_ratio", "target_above"):  # fields added since keys were first written
            if payload[name] is None:
                payload.pop(name)
        return "tr-" + _digest(payload)

    @property
    def dependencies(self) -> tuple["PretrainRun | TransferRun", ...]:
        """The runs whose checkpoints this one starts from."""
        return tuple(spec for spec in (self.pretrain, self.joint) if spec is not None)

    @property
    def source_data(self) -> PretrainRun | None:
        """The run whose training set holds the source structures this run learned from, if any."""
        if self.joint is not None:
            return self.joint.source_data
        return self.pretrain or self.source_pool

    @property
    def pretrain_size(self) -> Size | None:
        source = self.source_data
        return source.size if source else None

    @property
    def label(self) -> str:
        source = self.source_data
        pre = f" pretrain={_size_text(source.size, source.cap)}" if source else ""
        also = f" (also {', '.join(self.also)})" if self.also else ""
        above = f" above {self.target_above:g}" if self.target_above is not None else ""
        return (
            f"{self.experiment}: {self.strategy} {self.source}->{self.target}{above} "
            f"train={_size_text(self.train_size, self.cap)}{pre} seed={self.seed}{also}"
        )


def _size_text(size: Size, cap: int | None) -> str:
    text = f"{size:g}" if isinstance(size, float) else str(size)
    if isinstance(size, float):
        text = f"{size:.0%}"
    return f"{text}(<= {cap})" if cap else text


def stage_settings(stage: StageSpec, profile: Profile, lr_factor: float = 1.0) -> dict[str, Any]:
    # settings added since keys were first written enter a key only when set, so existing keys stay valid
    added = {"anneal_epochs", "epoch_structures"}
    settings = stage.model_dump(exclude={name for name in added if getattr(stage, name) is None})
    settings["lr"] = stage.lr * lr_factor
    settings.update(backend=profile.backend, device=profile.device, amp=profile.amp)
    if profile.threads is not None:  # absent otherwise, so that the keys of existing runs stay valid
        settings["threads"] = profile.threads
    return settings


def check_neighbours(manifest: Manifest, profile_name: str) -> None:
    """The graphs (the data section's max_nbr) and the profile's model must count the same neighbours."""
    from cgat_dgl.model import ModelConfig

    profile = manifest.profile(profile_name)
    wanted = ModelConfig.preset(profile.model, **profile.model_overrides).max_nbr
    if wanted != manifest.data.max_nbr:
        raise ValueError(
            f"profile {profile_name!r}: its model ({profile.model}) takes {wanted} neighbours per atom but the "
            f"manifest's data.max_nbr builds graphs with {manifest.data.max_nbr}; set one to the other "
            f"(data.max_nbr, or max_nbr in the profile's model_overrides)"
        )


def profile_numerics(profile: Profile) -> str:
    """What decides the bits of a profile's results on this machine (``cgat_dgl.numerics.key``): the
    device, and on CPU the numeric settings and whether the model runs the CPU kernels."""
    import torch

    from cgat_dgl.model import ModelConfig
    from cgat_dgl import kernels as cpu_kernels

    device = profile.device if profile.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    model = ModelConfig.preset(profile.model, **profile.model_overrides)
    kernels = device == "cpu" and model.implementation == "fast" and cpu_kernels.applies(torch.zeros(0))
    return numerics.key(device, cpu_kernels.enabled_groups() if kernels else ())


def model_settings(profile: Profile, name: Strategy | None = None) -> dict[str, Any]:
    settings = {"preset": profile.model, **profile.model_overrides}
    if name is not None and strategy(name).multifidelity:
        settings["n_fidelities"] = N_FIDELITIES
    return settings



def expand(
    manifest: Manifest,
    profile_name: str,
    only: list[str] | None = None,
    data_key: str = "",
    suites: list[str] | None = None,
) -> tuple[list[PretrainRun], list[TransferRun]]:
    """All runs of the selected experiments (by name, and by suite): shared pre-training runs first,
    then transfer runs."""
    profile = manifest.profile(profile_name)
    experiments = select_suites(_select(manifest.experiments, only), suites, manifest)
    # One pre-training run serves every task of the manifest that starts from its property, so it is
    # protected from all their targets (and the defaults and the manifest's protected_targets).
    targets = task_targets(manifest)
    model = model_settings(profile)  # of the pre-training runs
    check_neighbours(manifest, profile_name)
    numerics_key = profile_numerics(profile)
    pretrains: dict[str, PretrainRun] = {}
    transfers: list[TransferRun] = []
    for experiment in experiments:
        seeds = profile.seeds or experiment.seeds
        pretrain_stage = stage_settings(profile.pretrain, profile)
        transfer_stage = stage_settings(profile.transfer, profile, experiment.transfer_lr_factor)
        if experiment.transfer_normalization is not None:
            transfer_stage["normalization"] = experiment.transfer_normalization
        scratch_stage = stage_settings(profile.transfer, profile)
        # a correction has its own mean and spread, not those of the source property
        delta_stage = {**transfer_stage, "normalization": "refit"}
        stages = {"scratch": scratch_stage, "transfer": transfer_stage, "delta": delta_stage}
        # runs by (strategy, pretrain size, train size, seed), for the strategies that start from them
        started_from: dict[tuple[str, Size | None, Size, int], TransferRun] = {}
        # a strategy after the one it starts from (multifidelity_ft after multifidelity)
        for name in sorted(experiment.strategies, key=lambda s: strategy(s).requires is not None):
            entry = strategy(name)
            # every strategy but one from random weights that draws no source data has a pre-training size
            uses_source = entry.starts_from != "scratch" or entry.source_pool
            pretrain_sizes: list[Size | None] = list(experiment.pretrain_sizes) if uses_source else [None]
            for pretrain_size in pretrain_sizes:
                source = None
                if pretrain_size is not None:
                    source = PretrainRun(
                        profile=profile_name,
                        prop=experiment.source,
                        size=pretrain_size,
                        seed=profile.pretrain_seed,
                        model=model,
                        stage=pretrain_stage,
                        protected=pretrain_protected(manifest, experiment.source, targets),
                        data_key=data_key,
                        cap=profile.max_pretrain_size,
                        split_seed=manifest.data.split_seed,
                        numerics=numerics_key,
                    )
                    if entry.from_pretrained:
                        source = pretrains.setdefault(source.key, source)
                for train_size in experiment.train_sizes:
                    for seed in seeds:
                        run = TransferRun(
                            profile=profile_name,
                            experiment=experiment.name,
                            source=experiment.source,
                            target=experiment.target,
                            task_type=experiment.task_type,
                            strategy=name,
                            train_size=train_size,
                            seed=seed,
                            model=model_settings(profile, name),
                            stage=stages[entry.stage],
                            pretrain=source if entry.from_pretrained else None,
                            subsets_above=dict(experiment.subsets_above),
                            data_key=data_key,
                            cap=None if experiment.uncapped else profile.max_train_size,
                            eval_cap=profile.max_eval_size,
                            target_above=experiment.target_above,
                            split_seed=manifest.data.split_seed,
                            source_pool=source if entry.source_pool else None,
                            source_ratio=experiment.source_ratio if entry.source_pool else None,
                            joint=(started_from[(entry.requires, pretrain_size, train_size, seed)]
                                   if entry.requires is not None else None),
                            suite=experiment.suite,
                            numerics=numerics_key,
                        )
                        started_from[(name, pretrain_size, train_size, seed)] = run
                        transfers.append(run)
    return list(pretrains.values()), _shared_once(transfers)


def _shared_once(transfers: list[TransferRun]) -> list[TransferRun]:
    """The runs with those that several experiments ask for listed once, under the first experiment
    that asks, with the others in ``also``."""
    first: dict[str, TransferRun] = {}
    for run in transfers:
        seen = first.get(run.key)
        if seen is None:
            first[run.key] = run
        elif run.experiment not in seen.experiments:
            first[run.key] = replace(seen, also=(*seen.also, run.experiment))
    return list(first.values())


def task_targets(manifest: Manifest) -> dict[str, tuple[str, ...]]:
    """The targets of the manifest's experiments (all, whatever ``--only`` selects) by source property."""
    found: dict[str, set[str]] = {}
    for experiment in manifest.experiments:
        found.setdefault(experiment.source, set()).add(experiment.target)
    return {source: tuple(sorted(names)) for source, names in found.items()}


def pretrain_protected(
    manifest: Manifest, prop: str, targets: dict[str, tuple[str, ...]] | None = None
) -> tuple[str, ...]:
    """The protected properties of a pre-training on ``prop`` before the data is loaded."""
    targets = task_targets(manifest) if targets is None else targets
    return protected_candidates(prop, targets.get(prop, ()), manifest.data.protected_targets)


def _select(experiments: list[Experiment], only: list[str] | None) -> list[Experiment]:
    if not only:
        return experiments
    known = {e.name for e in experiments}
    unknown = [name for name in only if name not in known]
    if unknown:
        raise UnknownName(f"--only names unknown experiments {unknown}; known: {sorted(known)}")
    return [e for e in experiments if e.name in only]


def select_suites(experiments: list[Experiment], suites: list[str] | None, manifest: Manifest) -> list[Experiment]:
    if not suites:
        return experiments
    known = {e.suite for e in manifest.experiments}
    unknown = [name for name in suites if name not in known]
    if unknown:
        raise UnknownName(f"--suite names unknown suites {unknown}; the manifest has {sorted(known)}")
    return [e for e in experiments if e.suite in suites]


def resolve_size(size: Size, available: int, cap: int | None = None) -> int:
    """A manifest size as a number of structures.

    A profile's cap limits the pool a size is drawn from, so fractions keep their meaning in a
    small profile (10 % of a capped pool is still a tenth of the largest run).
    """
    pool = min(available, cap) if cap is not None else available
    count = int(round(size * pool)) if isinstance(size, float) else min(size, pool)
    return max(1, min(count, pool))
