"""Pre-train on a low-fidelity property, then transfer to a high-fidelity one with each strategy on the
same split, and tabulate the test errors (the ``cgat compare`` command)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..data.leakage import protected_properties
from ..data.splits import nested_subsets
from ..graphs.neighbors import GraphParams
from ..model import ModelConfig
from ..strategies import PaperStrategy
from .config import Normalization, Strategy, TrainConfig, train_config
from .task_data import prepare_transfer
from .tracking import Tracker
from .trainer import TrainResult, train


class CompareOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str
    target: str
    out_dir: Path
    # Properties whose val/test materials the pre-training must not see, besides the target and the
    # default high-fidelity ones the data holds (cgat_dgl.data.leakage).
    protect: list[str] = Field(default_factory=list)
    split_seed: int = 0
    pretrain_epochs: int = Field(12, ge=1)
    pretrain_size: int | None = Field(None, ge=1)  # None: the whole leakage-free training split
    pretrain_eval_size: int | None = Field(1000, ge=1)  # cap on pre-training val/test; None: all
    pretrain_checkpoint: Path | None = None  # reuse instead of pre-training
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(TrainConfig.model_fields["batch_size"].default, ge=1)
    lr: float = Field(TrainConfig.model_fields["lr"].default, gt=0)
    transfer_lr: float | None = None  # None: lr
    weight_decay: float = Field(TrainConfig.model_fields["weight_decay"].default, ge=0)
    cycle_period: int | None = Field(None, ge=1)  # None: each run's epochs (one rise and fall)
    seed: int = 0
    device: str = "auto"
    amp: bool = False
    num_workers: int = 0
    normalization: Normalization = "keep"
    # the paper's three: the others need a manifest (their data, joint runs or fitted baselines)
    strategies: list[PaperStrategy] = Field(default_factory=lambda: ["none", "head", "full"])
    resume: bool = True
    data_path: str = ""


@dataclass
class CompareOutcome:
    source: str
    target: str
    sizes: dict[str, int]  # train/val/test of the target, train of the pre-training
    results: dict[str, TrainResult] = field(default_factory=dict)  # by strategy
    pretrain: TrainResult | None = None
    pretrain_checkpoint: Path | None = None

    def improvement(self, strategy: str) -> float:
        """Reduction of the test MAE relative to training from scratch, in percent."""
        if "none" not in self.results:
            return math.nan
        base = self.results["none"].test["mae"]
        return 100.0 * (base - self.results[strategy].test["mae"]) / base


def _train_config(options: CompareOptions, epochs: int, lr: float, strategy: Strategy) -> TrainConfig:
    return train_config(
        options.model_dump(include={"batch_size", "weight_decay", "seed", "device", "amp", "num_workers",
                                    "normalization"}),
        epochs=epochs, lr=lr, cycle_period=options.cycle_period or epochs, strategy=strategy,
    )


def compare_strategies(
    loaded: Any,
    model_config: ModelConfig,
    options: CompareOptions,
    *,
    tracking_uri: str | None = None,
    experiment: str = "cgat-compare",
    progress: bool = False,
) -> CompareOutcome:
    """Pre-train (unless a checkpoint is given) and run every strategy; one MLflow parent run, a child each."""
    out = Path(options.out_dir)
    pretrain_split, target_split = prepare_transfer(
        loaded, options.source, options.target, out / "splits", options.split_seed, options.protect
    )
    train_set = loaded.dataset(options.target, list(target_split.train))
    val_set = loaded.dataset(options.target, list(target_split.val))
    test_set = loaded.dataset(options.target, list(target_split.test))
    outcome = CompareOutcome(
        options.source,
        options.target,
        {"train": len(train_set), "val": len(val_set), "test": len(test_set)},
    )
    graph_params = asdict(GraphParams(max_nbr=model_config.max_nbr))
    data_params = {"path": options.data_path, "source": options.source, "target": options.target,
                   "split_seed": options.split_seed}

    with Tracker(f"{options.source} -> {options.target}", experiment=experiment, tracking_uri=tracking_uri) as parent:
        parent.log_params({"compare": options.model_dump(mode="json")})
        checkpoint = options.pretrain_checkpoint
        if checkpoint is None:
            pre_train_ids = list(pretrain_split.train)
            if options.pretrain_size is not None and options.pretrain_size < len(pre_train_ids):
                pre_train_ids = list(nested_subsets(pretrain_split.train, [options.pretrain_size],
                                                    seed=options.split_seed)[options.pretrain_size])
            eval_ids = []
            for ids in (pretrain_split.val, pretrain_split.test):
                cap = options.pretrain_eval_size
                eval_ids.append(list(nested_subsets(ids, [cap], seed=options.split_seed)[cap])
                                if cap is not None and cap < len(ids) else list(ids))
            sets = [loaded.dataset(options.source, ids) for ids in (pre_train_ids, *eval_ids)]
            outcome.sizes["pretrain"] = len(sets[0])
            config = _train_config(options, options.pretrain_epochs, options.lr, "none")
            with parent.child(f"pretrain {options.source}", tags={"cgat.strategy": "pretrain"}) as tracker:
                protected = protected_properties(loaded, options.source, [options.target], options.protect)
                tracker.log_config(data={**data_params, "property": options.source, "train_size": len(sets[0]),
                                         "val_size": len(sets[1]), "test_size": len(sets[2]),
                                         "protected": ",".join(protected)})
                outcome.pretrain = train(
                    model_config, config, *sets, out_dir=out / "pretrain", tracker=tracker,
                    resume=options.resume, progress=progress,
                    metadata={"property": options.source, "graph_params": graph_params},
                )  # fmt: skip
            checkpoint = outcome.pretrain.checkpoint
        outcome.pretrain_checkpoint = checkpoint

        lr = options.transfer_lr or options.lr
        for strategy in options.strategies:
            config = _train_config(options, options.epochs, lr, strategy)
            with parent.child(f"{options.target} {strategy}", tags={"cgat.strategy": strategy}) as tracker:
                tracker.log_config(data={**data_params, "property": options.target, **outcome.sizes})
                outcome.results[strategy] = train(
                    model_config, config, train_set, val_set, test_set, out_dir=out / f"transfer-{strategy}",
                    init_checkpoint=None if strategy == "none" else checkpoint, tracker=tracker,
                    resume=options.resume, progress=progress,
                    metadata={"property": options.target, "graph_params": graph_params},
                )  # fmt: skip
            parent.log_metrics({f"test_mae_{strategy}": outcome.results[strategy].test["mae"]})
    return outcome


def format_table(outcome: CompareOutcome) -> str:
    sizes = ", ".join(f"{name} {count}" for name, count in outcome.sizes.items())
    lines = [
        f"{outcome.source} -> {outcome.target} ({sizes})",
        f"{'strategy':<10}{'test MAE':>10}{'RMSE':>10}{'R2':>8}{'vs none':>10}{'trainable':>12}{'best ep.':>10}",
    ]
    if outcome.pretrain is not None and outcome.pretrain.test:
        pre = outcome.pretrain.test
        lines.append(f"{'(pretrain)':<10}{pre['mae']:>10.4f}{pre['rmse']:>10.4f}{pre['r2']:>8.3f}"
                     f"{'':>10}{outcome.pretrain.n_trainable:>12}{outcome.pretrain.best_epoch + 1:>10}")
    for strategy, result in outcome.results.items():
        gain = outcome.improvement(strategy)
        gain_text = "" if strategy == "none" or math.isnan(gain) else f"{gain:+.1f}%"
        lines.append(
            f"{strategy:<10}{result.test['mae']:>10.4f}{result.test['rmse']:>10.4f}{result.test['r2']:>8.3f}"
            f"{gain_text:>10}{result.n_trainable:>12}{result.best_epoch + 1:>10}"
        )
    return "\n".join(lines)
