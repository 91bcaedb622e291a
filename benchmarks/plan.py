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
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from benchmarks.manifest import Experiment, Manifest, Profile, Size, StageSpec, Strategy
from cgat_dgl.data.leakage import protected_candidates

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

    kind: Literal["transfer"] = "transfer"

    @property
    def key(self) -> str:
        payload = asdict(self)
        payload.pop("profile")
        payload["pretrain"] = self.pretrain.key if self.pretrain else None
        return "tr-" + _digest(payload)

    @property
    def pretrain_size(self) -> Size | None:
        return self.pretrain.size if self.pretrain else None

    @property
    def label(self) -> str:
        pre = f" pretrain={_size_text(self.pretrain.size, self.pretrain.cap)}" if self.pretrain else ""
        return (
            f"{self.experiment}: {self.strategy} {self.source}->{self.target} "
            f"train={_size_text(self.train_size, self.cap)}{pre} seed={self.seed}"
        )


def _size_text(size: Size, cap: int | None) -> str:
    text = f"{size:g}" if isinstance(size, float) else str(size)
    if isinstance(size, float):
        text = f"{size:.0%}"
    return f"{text}(<= {cap})" if cap else text


def stage_settings(stage: StageSpec, profile: Profile, lr_factor: float = 1.0) -> dict[str, Any]:
    settings = stage.model_dump()
    settings["lr"] = stage.lr * lr_factor
    settings.update(backend=profile.backend, device=profile.device, amp=profile.amp)
    if profile.threads is not None:  # absent otherwise, so that the keys of existing runs stay valid
        settings["threads"] = profile.threads
    return settings


def model_settings(profile: Profile) -> dict[str, Any]:
    return {"preset": profile.model, **profile.model_overrides}


def expand(
    manifest: Manifest, profile_name: str, only: list[str] | None = None, data_key: str = ""
) -> tuple[list[PretrainRun], list[TransferRun]]:
    """All runs of the selected experiments: shared pre-training runs first, then transfer runs."""
    profile = manifest.profile(profile_name)
    experiments = _select(manifest.experiments, only)
    # One pre-training run serves every task of the manifest that starts from its property, so it is
    # protected from all their targets (and the defaults and the manifest's protected_targets).
    targets = task_targets(manifest)
    model = model_settings(profile)
    pretrains: dict[str, PretrainRun] = {}
    transfers: list[TransferRun] = []
    for experiment in experiments:
        seeds = profile.seeds or experiment.seeds
        pretrain_stage = stage_settings(profile.pretrain, profile)
        transfer_stage = stage_settings(profile.transfer, profile, experiment.transfer_lr_factor)
        if experiment.transfer_normalization is not None:
            transfer_stage["normalization"] = experiment.transfer_normalization
        scratch_stage = stage_settings(profile.transfer, profile)
        for strategy in experiment.strategies:
            pretrain_sizes: list[Size | None] = [None] if strategy == "none" else list(experiment.pretrain_sizes)
            for pretrain_size in pretrain_sizes:
                pretrain = None
                if pretrain_size is not None:
                    pretrain = PretrainRun(
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
                    )
                    pretrain = pretrains.setdefault(pretrain.key, pretrain)
                for train_size in experiment.train_sizes:
                    for seed in seeds:
                        transfers.append(
                            TransferRun(
                                profile=profile_name,
                                experiment=experiment.name,
                                source=experiment.source,
                                target=experiment.target,
                                task_type=experiment.task_type,
                                strategy=strategy,
                                train_size=train_size,
                                seed=seed,
                                model=model,
                                stage=scratch_stage if strategy == "none" else transfer_stage,
                                pretrain=pretrain,
                                subsets_above=dict(experiment.subsets_above),
                                data_key=data_key,
                                cap=profile.max_train_size,
                                eval_cap=profile.max_eval_size,
                                split_seed=manifest.data.split_seed,
                            )
                        )
    return list(pretrains.values()), transfers


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
        raise KeyError(f"--only names unknown experiments {unknown}; known: {sorted(known)}")
    return [e for e in experiments if e.name in only]


def resolve_size(size: Size, available: int, cap: int | None = None) -> int:
    """A manifest size as a number of structures.

    A profile's cap limits the pool a size is drawn from, so fractions keep their meaning in a
    small profile (10 % of a capped pool is still a tenth of the largest run).
    """
    pool = min(available, cap) if cap is not None else available
    count = int(round(size * pool)) if isinstance(size, float) else min(size, pool)
    return max(1, min(count, pool))
