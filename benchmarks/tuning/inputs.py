"""What every trial of a study trains on: the task's data sets, the model, the base training settings
and, for head or full transfer, the experiment's pre-trained checkpoint (made once by the runner)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from benchmarks.manifest import Manifest, StudySpec
from benchmarks.plan import PretrainRun, TransferRun, expand, model_settings, stage_settings
from cgat_dgl.strategies import strategy
from cgat_dgl.model.config import ModelConfig
from cgat_dgl.training.config import TrainConfig


@dataclass
class TrialInputs:
    model_config: ModelConfig
    train_config: TrainConfig  # lr and weight decay are replaced by each trial's
    train_set: Sequence[Any]
    val_set: Sequence[Any]
    test_set: Sequence[Any]
    init_checkpoint: Path | None = None
    pretrain_run_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)  # stored in the trials' checkpoints
    params: dict[str, Any] = field(default_factory=dict)  # logged on every trial run
    tags: dict[str, str] = field(default_factory=dict)  # set on every trial run


@dataclass
class InputOptions:
    profile: str
    data_path: Path
    work_dir: Path  # the runner's: pre-training checkpoints and locks live there
    tracking_uri: str | None = None
    progress: bool = True


def transfer_spec(
    manifest: Manifest,
    study: StudySpec,
    profile_name: str,
    data_key: str,
    pretrain_size: Callable[[PretrainRun], float] | None = None,
) -> TransferRun:
    """The study's task as a transfer run: its strategy, its train size and, of the experiment's
    pre-training runs, the largest by ``pretrain_size`` (the first listed without it)."""
    _, transfers = expand(manifest, profile_name, [study.experiment], data_key=data_key)
    strategy_runs = [run for run in transfers if run.strategy == study.strategy]
    if not strategy_runs and strategy(study.strategy).target_only and transfers:
        # no transfer depends on the target alone: the experiment's task with random weights, so that
        # an inter-property study can give no transfer the same search as the transfers
        strategy_runs = [replace(run, pretrain=None) for run in transfers]
    if not strategy_runs:
        experiment = manifest.experiment(study.experiment)
        raise ValueError(
            f"study {study.name!r}: experiment {study.experiment!r} has no strategy {study.strategy!r} "
            f"(it lists {experiment.strategies})"
        )
    template = strategy_runs[0]
    if pretrain_size is not None and template.pretrain is not None:
        candidates = {run.pretrain.key: run for run in strategy_runs if run.pretrain is not None}
        template = max(candidates.values(), key=lambda run: pretrain_size(run.pretrain))  # type: ignore[arg-type]
    profile = manifest.profile(profile_name)
    experiment = manifest.experiment(study.experiment)
    factor = 1.0 if study.strategy == "none" else experiment.transfer_lr_factor
    stage = stage_settings(profile.transfer, profile, factor)
    if experiment.transfer_normalization is not None and strategy(study.strategy).from_pretrained:
        stage["normalization"] = experiment.transfer_normalization  # as the experiment's own runs (plan.expand)
    return TransferRun(
        profile=profile_name,
        experiment=template.experiment,
        source=template.source,
        target=template.target,
        task_type=template.task_type,
        strategy=study.strategy,
        train_size=study.train_size,
        seed=study.seed,
        model=model_settings(profile),
        stage=stage,
        pretrain=template.pretrain if strategy(study.strategy).from_pretrained else None,
        subsets_above=dict(template.subsets_above),
        data_key=data_key,
        cap=profile.max_train_size,
        eval_cap=profile.max_eval_size,
    )


def prepare_inputs(manifest: Manifest, study: StudySpec, options: InputOptions) -> TrialInputs:
    """Load the task's data and, unless the strategy is ``none``, obtain the pre-trained checkpoint."""
    # The runner (and through it the data layer) is imported here, so the rest of the package
    # works with inputs built by other means.
    from benchmarks.runner import Runner, RunnerOptions, model_config_for, spec_tags, train_config_for

    runner = Runner(
        manifest,
        RunnerOptions(
            profile=options.profile,
            data_path=options.data_path,
            work_dir=options.work_dir,
            tracking_uri=options.tracking_uri,
            only=[study.experiment],
            progress=options.progress,
        ),
    )
    data = runner.task_data
    spec = transfer_spec(manifest, study, options.profile, runner.data_key, data.resolved_pretrain_size)
    train_set, val_set, test_set = data.transfer_sets(
        spec.target, spec.train_size, spec.cap, spec.eval_cap, subset_seed=spec.seed, above=spec.target_above
    )
    init_checkpoint, pretrain_run_id = None, None
    params: dict[str, Any] = {
        "train_size": len(train_set),
        "val_size": len(val_set),
        "test_size": len(test_set),
        "data.path": str(options.data_path),
    }
    if spec.pretrain is not None:
        init_checkpoint, pretrain_run_id = ensure_pretrained(runner, spec.pretrain)
        params["pretrain_size"] = data.resolved_pretrain_size(spec.pretrain)
    model_config = model_config_for(spec.model, spec.stage["backend"])
    return TrialInputs(
        model_config=model_config,
        train_config=train_config_for(spec),
        train_set=train_set,
        val_set=val_set,
        test_set=test_set,
        init_checkpoint=init_checkpoint,
        pretrain_run_id=pretrain_run_id,
        metadata={"property": spec.target},
        params=params,
        # The trial's kind and seed tags come from the tuning callback.
        tags={k: v for k, v in spec_tags(spec).items() if k not in ("cgat.kind", "cgat.seed")},
    )


def ensure_pretrained(runner: Any, pretrain: PretrainRun) -> tuple[Path, str]:
    """The pre-trained checkpoint and its run: reused when finished, otherwise trained now.

    The runner's claim is taken blocking, so a worker that finds another one pre-training waits for
    that run instead of training the same weights twice.
    """
    store = runner.store
    state = store.runs_by_key().get(pretrain.key)
    if state is None or not state.finished:
        with store.claim(pretrain.key, wait=True):
            state = store.runs_by_key().get(pretrain.key)
            if state is None or not state.finished:
                error = runner.execute(pretrain)
                if error is not None:
                    raise RuntimeError(f"pre-training {pretrain.label} failed: {error}")
                state = store.runs_by_key()[pretrain.key]
    checkpoint = Path(runner.options.work_dir) / "checkpoints" / pretrain.key / "best.pt"
    if not checkpoint.is_file():
        raise FileNotFoundError(f"pre-training {pretrain.label} is finished but its checkpoint is missing: {checkpoint}")
    return checkpoint, state.run_id
