"""Expansion of a manifest into the runs it asks for, each with a stable key.

A pre-training run is identified by everything that determines its weights (property, size, seed,
model and stage settings, split seed, the data file and the properties whose validation and test
materials it must not see), so every transfer run that needs the same one shares it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from benchmarks.manifest import Experiment, Manifest, Profile, Size, StageSpec, Strategy

KEY_VERSION = 1


def _digest(payload: dict[str, Any]) -> str:
    text = json.dumps({"v": KEY_VERSION, **payload}, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class PretrainRun:
    profile: str
    prop: str
    size: Size
    seed: int
    model: dict[str, Any] = field(hash=False, compare=False)
    stage: dict[str, Any] = field(hash=False, compare=False)
    protected: tuple[str, ...] = ()  # target properties whose val/test materials are excluded
    data_key: str = ""
    cap: int | None = None

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
    # Every target property of the manifest protects its val/test materials from every pre-training run,
    # so one pre-training run serves all tasks that start from the same property.
    protected = tuple(sorted({e.target for e in manifest.experiments}))
    model = model_settings(profile)
    pretrains: dict[str, PretrainRun] = {}
    transfers: list[TransferRun] = []
    for experiment in experiments:
        seeds = profile.seeds or experiment.seeds
        pretrain_stage = stage_settings(profile.pretrain, profile)
        transfer_stage = stage_settings(profile.transfer, profile, experiment.transfer_lr_factor)
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
                        protected=protected,
                        data_key=data_key,
                        cap=profile.max_pretrain_size,
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
                            )
                        )
    return list(pretrains.values()), transfers


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
