"""``cgat compare``: pre-train on a low-fidelity property, transfer to a high-fidelity one with each
strategy, and tabulate the test errors beside the trivial baselines.

It is a one-experiment manifest run by the benchmark runner, so it has the runner's run keys, resume,
store and report: the manifest is written to ``<out>/experiments.yaml``, the store, runs and report
lie beside it, and ``cgat-bench run|report|ui <out>/experiments.yaml`` work on it like on any other.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from benchmarks.manifest import DataSpec, Experiment, Manifest, Profile, StageSpec, load_manifest
from cgat_dgl.model import ModelConfig
from cgat_dgl.strategies import PAPER_STRATEGIES, strategies, strategy
from cgat_dgl.training.config import Strategy

PROFILE = "compare"
SUITE = "compare"
MANIFEST_FILE = "experiments.yaml"


class CompareOptions(BaseModel):
    """What ``cgat compare`` takes; an unset training value (None) is the manifest stage's default."""

    model_config = ConfigDict(extra="forbid")

    source: str
    target: str
    data_path: Path
    out_dir: Path = Path("runs/compare")
    cache_dir: Path = Path("cache")
    # Properties whose val/test materials the pre-training must not see, besides the target and the
    # default high-fidelity ones the data holds (cgat_dgl.data.leakage).
    protect: list[str] = Field(default_factory=list)
    split_seed: int = 0
    preset: Literal["paper", "cpu", "smoke"] = "cpu"
    backend: Literal["dgl", "torch"] = Profile.model_fields["backend"].default
    device: Literal["cpu", "cuda", "auto"] = Profile.model_fields["device"].default
    amp: bool = False
    threads: int | None = Field(None, ge=1)
    # A quick look, not the paper's 390/280 epochs: short runs on a subset, with a larger step.
    pretrain_epochs: int = Field(10, ge=1)
    pretrain_size: int | None = Field(8000, ge=1)  # None: the whole leakage-free training split
    epochs: int = Field(20, ge=1)
    lr: float = Field(1e-3, gt=0)
    transfer_lr: float | None = Field(None, gt=0)  # None: lr
    batch_size: int | None = Field(None, ge=1)
    weight_decay: float | None = Field(None, ge=0)
    cycle_period: int | None = Field(None, ge=1)  # None: each run's epochs (one rise and fall)
    patience: int | None = Field(None, ge=1)  # early stopping on a validation plateau; None: fixed length
    normalization: Literal["keep", "refit"] | None = None
    # None: the paper's three and every baseline that applies to the task
    strategies: list[Strategy] | None = None
    seed: int = 0

    def stage(self, epochs: int, lr: float) -> StageSpec:
        given = {name: value for name in ("batch_size", "weight_decay", "patience", "normalization")
                 if (value := getattr(self, name)) is not None}
        return StageSpec(epochs=epochs, lr=lr, cycle_period=self.cycle_period or epochs, **given)

    @property
    def experiment_name(self) -> str:
        return f"{self.source}-to-{self.target}"


def default_strategies(source: str, target: str) -> list[Strategy]:
    """The paper's three and the baselines the task allows (a source value needs a same-quantity task)."""
    probe = Experiment(name="probe", source=source, target=target, strategies=["none"])
    baselines = [name for name in strategies() if strategy(name).is_baseline
                 and (probe.task_type == "intra" or not strategy(name).same_quantity_only)]
    return [*PAPER_STRATEGIES, *baselines]


def compare_manifest(options: CompareOptions) -> Manifest:
    profile = Profile(
        model=options.preset,
        backend=options.backend,
        device=options.device,
        amp=options.amp,
        threads=options.threads,
        pretrain=options.stage(options.pretrain_epochs, options.lr),
        transfer=options.stage(options.epochs, options.transfer_lr or options.lr),
        pretrain_seed=options.seed,
        max_pretrain_size=options.pretrain_size,
    )
    experiment = Experiment(
        name=options.experiment_name,
        source=options.source,
        target=options.target,
        strategies=options.strategies or default_strategies(options.source, options.target),
        seeds=[options.seed],
        suite=SUITE,
    )
    data = DataSpec(
        path=str(Path(options.data_path).resolve()),
        cache_dir=str(Path(options.cache_dir).resolve()),
        max_nbr=ModelConfig.preset(options.preset).max_nbr,
        split_seed=options.split_seed,
        protected_targets=list(options.protect),
    )
    return Manifest(data=data, profiles={PROFILE: profile}, experiments=[experiment])


def write_manifest(manifest: Manifest, folder: Path) -> Path:
    """The manifest as YAML (defaults left out), read back through the manifest's own validation."""
    path = Path(folder) / MANIFEST_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(manifest.model_dump(mode="json", exclude_defaults=True), sort_keys=False)
    path.write_text("# Written by `cgat compare`; `cgat-bench run` runs it as any other manifest.\n" + text)
    load_manifest(path)
    return path


def run_compare(options: CompareOptions, tracking_uri: str | None = None, progress: bool = True) -> int:
    """Write the manifest, run it (``cgat-bench run``: runs, then the report) and print the table."""
    from benchmarks.cli import main as bench_main
    from benchmarks.paths import command_paths

    path = write_manifest(compare_manifest(options), options.out_dir)
    command = ["run", str(path), "--data", str(Path(options.data_path).resolve())]
    if tracking_uri is not None:
        command += ["--tracking-uri", tracking_uri]
    if not progress:
        command.append("--no-progress")
    code = bench_main(command)
    if code != 2:  # 1: some runs failed; the table shows those that finished
        print(compare_table(command_paths(path, tracking_uri).tracking_uri, path, options))
    return code


def compare_table(tracking_uri: str, manifest_path: Path, options: CompareOptions) -> str:
    """Test errors of the finished runs the manifest makes now, from the store."""
    from benchmarks.cli import ReportSources, current_runs
    from benchmarks.report import collect_runs
    from benchmarks.store import EXPERIMENT

    runs, _ = collect_runs(tracking_uri, profile=PROFILE, experiment_name=EXPERIMENT)
    sources = ReportSources(tracking_uri, manifest_path, PROFILE, data_path=Path(options.data_path).resolve())
    runs = current_runs(runs, sources)
    pretrain = runs[runs["kind"] == "pretrain"].drop_duplicates("run_id")  # the plan's one pre-training
    transfers = runs[(runs["kind"] == "transfer") & (runs["experiment"] == options.experiment_name)]
    transfers = transfers.set_index("strategy")
    train_size = int(transfers["train_size"].iloc[0]) if not transfers.empty else 0
    pretrain_size = int(pretrain["train_size"].iloc[0]) if not pretrain.empty else 0
    lines = [
        f"{options.source} -> {options.target} (train {train_size}, pretrain {pretrain_size}; seed {options.seed})",
        f"{'strategy':<20}{'test MAE':>10}{'RMSE':>10}{'R2':>8}{'vs none':>10}{'best ep.':>10}  stop",
    ]
    rows: list[tuple[str, Any]] = [("(pretrain)", row) for _, row in pretrain.iterrows()]
    rows += [(name, transfers.loc[name]) for name in compare_order(options) if name in transfers.index]
    base = transfers.loc["none", "test_mae"] if "none" in transfers.index else math.nan
    for name, row in rows:
        gain = 100.0 * (base - row["test_mae"]) / base
        gain_text = "" if name in ("none", "(pretrain)") or math.isnan(gain) else f"{gain:+.1f}%"
        fitted = name != "(pretrain)" and strategy(name).is_baseline
        best = "" if fitted or math.isnan(row["best_epoch"]) else f"{int(row['best_epoch']) + 1}"
        lines.append(f"{name:<20}{row['test_mae']:>10.4f}{row['test_rmse']:>10.4f}{row['test_r2']:>8.3f}"
                     f"{gain_text:>10}{best:>10}  {row['stop_reason'] or ''}")
    return "\n".join(lines)


def compare_order(options: CompareOptions) -> list[Strategy]:
    return options.strategies or default_strategies(options.source, options.target)
