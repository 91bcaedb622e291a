"""``cgat-bench tune``: run a study of the manifest, or one per strategy with the same budget."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.manifest import ManifestError, load_manifest
from benchmarks.paths import command_paths, data_path_for
from benchmarks.tuning.artifacts import compare_studies, markdown_table, write_comparison
from benchmarks.tuning.inputs import InputOptions, prepare_inputs
from benchmarks.tuning.space import StudyConfigError
from benchmarks.tuning.storage import HeartbeatSettings, default_storage_url
from benchmarks.tuning.study import StudyResult, TuneOptions, run_study, strategy_specs


def add_tune_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``tune`` on an argparse subparsers object; the command runs ``tune_main``."""
    parser = subparsers.add_parser(
        "tune",
        help="Optuna study over learning rate and weight decay of a transfer task",
        description="Run (or continue) a study of the manifest until it has n_trials complete or pruned trials.",
    )
    add_tune_arguments(parser)
    parser.set_defaults(handler=tune_main, func=tune_main)
    return parser


def add_tune_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("manifest", type=Path, help="experiments.yaml")
    parser.add_argument("--study", required=True, help="a study name of the manifest's 'studies'")
    parser.add_argument("--profile", default=None, help="manifest profile (default: the manifest's only one)")
    parser.add_argument("--storage", default=None,
                        help="Optuna RDB URL shared by workers (default: mlflow/optuna.db beside the manifest)")
    parser.add_argument("--n-trials", type=int, default=None, help="total trials, replacing the study's n_trials")
    parser.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else mlflow/mlflow.db beside the manifest)")
    parser.add_argument("--data", type=Path, default=None, help="data file (default: CGAT_SHARED_DATA or the manifest's data.path)")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="checkpoints and locks, shared with 'cgat-bench run' (default: runs/ beside the manifest)")
    parser.add_argument(
        "--strategy",
        default=None,
        help="comma list (e.g. none,head,full): one study <study>-<strategy> each, same search space and budget",
    )
    parser.add_argument("--heartbeat", type=int, default=60, help="seconds between a worker's heartbeats")
    parser.add_argument("--grace", type=int, default=None, help="seconds without heartbeat before a trial is failed and retried (default 3 x heartbeat)")
    parser.add_argument("--max-retry", type=int, default=3, help="retries of a trial whose worker died")
    parser.add_argument("--keep-checkpoints", action="store_true", help="keep each trial's checkpoint folder")
    parser.add_argument("--no-progress", action="store_true")


@dataclass(frozen=True)
class TunePaths:
    storage: str  # Optuna RDB URL
    tracking_uri: str
    work_dir: Path


def tune_paths(args: argparse.Namespace) -> TunePaths:
    """Explicit options win (and MLFLOW_TRACKING_URI for the store); the rest defaults beside the
    manifest, where ``cgat-bench run`` of the same manifest keeps its store and runs, so a study
    finds the pre-trainings of its project and never those of another."""
    paths = command_paths(args.manifest, args.tracking_uri, args.work_dir)
    return TunePaths(
        storage=args.storage or default_storage_url(paths.base),
        tracking_uri=paths.tracking_uri,
        work_dir=paths.work_dir,
    )


def tune_main(args: argparse.Namespace) -> int:
    try:
        manifest = load_manifest(args.manifest)
        base = manifest.study(args.study)
        args.profile = manifest.profile_name(args.profile)
        profile = manifest.profile(args.profile)
        data_path = data_path_for(args.data, manifest.resolve(manifest.data.path))
        specs = strategy_specs(base, [s.strip() for s in args.strategy.split(",")]) if args.strategy else [base]
        heartbeat = HeartbeatSettings(args.heartbeat, args.grace or 3 * args.heartbeat, args.max_retry)
    except (ManifestError, KeyError, FileNotFoundError, StudyConfigError, ValueError) as error:
        print(f"cgat-bench tune: {error}", file=sys.stderr)
        return 2
    paths = tune_paths(args)
    options = TuneOptions(
        storage=paths.storage,
        n_trials=args.n_trials,
        tracking_uri=paths.tracking_uri,
        profile=args.profile,
        work_dir=paths.work_dir,
        heartbeat=heartbeat,
        keep_checkpoints=args.keep_checkpoints,
        progress=not args.no_progress,
    )
    input_options = InputOptions(args.profile, data_path, paths.work_dir, paths.tracking_uri, not args.no_progress)
    results: list[StudyResult] = []
    for spec in specs:
        try:
            result = run_study(
                spec,
                lambda spec=spec: prepare_inputs(manifest, spec, input_options),
                options,
                epochs=profile.transfer.epochs,
            )
        except StudyConfigError as error:
            print(f"cgat-bench tune: {error}", file=sys.stderr)
            return 2
        results.append(result)
        print(_result_text(result), flush=True)
    if len(specs) > 1:
        frame = compare_studies(paths.storage, [spec.name for spec in specs])
        path = write_comparison(frame, paths.work_dir / "tuning" / f"{base.name}-comparison.md", f"Study {base.name}: strategies with the same budget")
        print(markdown_table(frame), end="")
        print(f"[tune] comparison written to {path}")
    return 0


def _result_text(result: StudyResult) -> str:
    counts = result.counts
    head = (
        f"[tune] study {result.name}: {counts['complete']} complete, {counts['pruned']} pruned, "
        f"{counts['fail'] - counts['surplus']} failed of {result.n_trials} (mlflow parent run {result.parent_run_id})"
    )
    if result.best is None:
        return head + "; no complete trial"
    params = ", ".join(f"{k}={v:.3g}" for k, v in result.best["params"].items())
    return head + f"\n[tune] best: trial {result.best['number']}, val MAE {result.best['value']:.4g}, {params}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tuning")
    add_tune_arguments(parser)
    return tune_main(parser.parse_args(argv))
