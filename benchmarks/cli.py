"""``cgat-bench``: the benchmark's command line. Each subcommand is a parser plus a handler.

    cgat-bench run experiments.yaml --profile cpu [--dry-run] [--only A,B] [--suite S] [--workers N]
    cgat-bench report [--profile cpu] [--seeds 0-2] [--suite S]
    cgat-bench tune experiments.yaml --study NAME
    cgat-bench ui
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.manifest import Manifest, ManifestError, load_manifest
from benchmarks.summary import REPO_ROOT, SHARED_DATA_ENV, DatasetSummary
from benchmarks.tuning import add_tune_parser
from cgat_dgl.training.tracking import resolve_tracking_uri

Handler = Callable[[argparse.Namespace], int]
DEFAULT_WORK_DIR = REPO_ROOT / "runs"
DEFAULT_REPORT_DIR = REPO_ROOT / "mlflow" / "reports"


def data_path_for(argument: Path | None, manifest_data_path: Path) -> Path:
    """--data, else $CGAT_SHARED_DATA, else the manifest's data.path (relative to the manifest)."""
    if argument is not None:
        path = argument
    elif os.environ.get(SHARED_DATA_ENV):
        path = Path(os.environ[SHARED_DATA_ENV])
    else:
        path = manifest_data_path
    if not path.exists():
        raise FileNotFoundError(f"data not found: {path} (pass --data or set ${SHARED_DATA_ENV})")
    return path


def with_split_seed(manifest: Manifest, split_seed: int | None) -> Manifest:
    """The manifest with another 80/10/10 split (a replication over splits), or unchanged."""
    if split_seed is None:
        return manifest
    changed = manifest.model_copy(update={"data": manifest.data.model_copy(update={"split_seed": split_seed})})
    changed._base_dir = manifest._base_dir
    return changed


def _split_names(text: str | None) -> list[str] | None:
    return [name.strip() for name in text.split(",") if name.strip()] if text else None


# --- run ---------------------------------------------------------------------------------------
def _run(args: argparse.Namespace) -> int:
    from benchmarks.runner import Runner, RunnerOptions

    try:
        manifest = with_split_seed(load_manifest(args.experiments), args.split_seed)
        manifest.profile(args.profile)
        data_path = data_path_for(args.data, manifest.resolve(manifest.data.path))
        options = RunnerOptions(
            profile=args.profile,
            data_path=data_path,
            work_dir=args.work_dir,
            tracking_uri=args.tracking_uri,
            cache_dir=args.cache_dir,
            only=_split_names(args.only),
            suites=_split_names(args.suite),
            workers=args.workers,
            progress=not args.no_progress,
        )
        runner = Runner(manifest, options)
    except (ManifestError, FileNotFoundError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    statuses = runner.status()
    if args.dry_run:
        for spec, status in statuses:
            print(f"{status:<9} {spec.key}  {spec.label}")
        counts: dict[str, int] = {}
        for _, status in statuses:
            counts[status] = counts.get(status, 0) + 1
        print(f"{len(statuses)} runs: " + ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items())))
        return 0
    start = time.perf_counter()
    data = runner.task_data
    print(DatasetSummary(data.loaded, time.perf_counter() - start).text(), flush=True)
    todo = sum(1 for _, status in statuses if status != "FINISHED")
    print(f"{len(statuses)} runs in profile {args.profile!r}: {len(statuses) - todo} finished, {todo} to run", flush=True)
    outcome = runner.run()
    elapsed = time.perf_counter() - start
    print(
        f"done in {elapsed:.0f} s: {len(outcome.done)} trained, {len(outcome.skipped)} already finished, "
        f"{len(outcome.failed)} failed"
    )
    for key, error in outcome.failed.items():
        print(f"  FAILED {key}: {error}")
    if not args.no_report:
        _write_report(runner.store.tracking_uri, args.profile, args.report_dir, data.loaded, suites=_split_names(args.suite))
    return 1 if outcome.failed else 0


def add_run_command(commands: argparse._SubParsersAction) -> None:
    run = commands.add_parser("run", help="run the experiments of a manifest (idempotent, resumable)")
    run.add_argument("experiments", type=Path, help="experiments.yaml")
    run.add_argument("--profile", default="cpu", help="manifest profile (default: cpu)")
    run.add_argument("--data", type=Path, default=None, help=f"data file (default: ${SHARED_DATA_ENV} or the manifest's)")
    run.add_argument("--cache-dir", type=Path, default=None, help="graph cache (default: the manifest's data.cache_dir)")
    run.add_argument("--work-dir", type=Path, default=DEFAULT_WORK_DIR, help="checkpoints and run locks")
    run.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: sqlite store in mlflow/)")
    run.add_argument("--only", default=None, help="comma list of experiment names")
    run.add_argument("--suite", default=None, help="comma list of suites (experiments' suite field; default: all)")
    run.add_argument("--workers", type=int, default=None,
                     help="processes sharing the store (default: the profile's workers)")
    run.add_argument("--split-seed", type=int, default=None,
                     help="another 80/10/10 split (default: the manifest's data.split_seed): new pre-trainings and runs")
    run.add_argument("--dry-run", action="store_true", help="list the runs and which already exist")
    run.add_argument("--no-report", action="store_true", help="skip the report at the end")
    run.add_argument("--report-dir", type=Path, default=DEFAULT_REPORT_DIR)
    run.add_argument("--no-progress", action="store_true")
    run.set_defaults(handler=_run)


# --- report ------------------------------------------------------------------------------------
def parse_seeds(text: str | None) -> list[int] | None:
    """"0,1,2" or "0-2" (or a mix, "0-2,5") as a sorted list of seeds."""
    if not text:
        return None
    seeds: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        low, _, high = part.partition("-")
        if not low.isdigit() or (high and not high.isdigit()) or (high and int(high) < int(low)):
            raise ValueError(f"--seeds: {part!r} is not a seed or a range like 0-2")
        seeds.update(range(int(low), int(high or low) + 1))
    if not seeds:
        raise ValueError(f"--seeds: no seed in {text!r}")
    return sorted(seeds)


def _write_report(
    tracking_uri: str,
    profile: str | None,
    report_dir: Path,
    loaded=None,
    seeds: list[int] | None = None,
    suites: list[str] | None = None,
) -> Path:
    import pandas as pd

    from benchmarks.report import collect_runs, write_report
    from benchmarks.report.claims import verdict_counts
    from benchmarks.report.collect import collect_study_trials, collect_test_errors
    from benchmarks.store import EXPERIMENT
    from cgat_dgl.training.tracking import Tracker

    runs, histories = collect_runs(tracking_uri, profile=profile, experiment_name=EXPERIMENT)
    studies = collect_study_trials(tracking_uri, profile=profile, experiment_name=EXPERIMENT)
    name = profile or "all"
    if seeds is not None:
        # pre-training runs are shared by every seed's transfers; only transfers are filtered
        runs = runs[(runs["kind"] != "transfer") | runs["seed"].isin(seeds)].reset_index(drop=True)
        studies = studies[studies["seed"].isin(seeds)]
        name += "-seeds-" + "-".join(map(str, seeds))
    if suites:
        runs, studies = _in_suites(runs, studies, suites)
        name += "-" + "-".join(suites)
    # per-material errors serve the comparisons of transfers and trials; pre-training runs need none
    transfers = runs.loc[runs["kind"] == "transfer", "run_id"]
    errors = collect_test_errors(tracking_uri, [*transfers, *studies["run_id"]])
    out_dir = Path(report_dir) / name
    targets = elements = None
    if loaded is not None:
        targets = loaded.targets
        elements = {
            material: sorted({_symbol(int(z)) for z in graph.comp_elements})
            for material, graph in loaded.graphs.items()
        }
    path = write_report(runs, histories, out_dir, targets=targets, elements=elements, errors=errors, studies=studies)
    claims = pd.read_csv(out_dir / "claims.csv")
    tags = {
        "cgat.kind": "report",
        "cgat.profile": profile or "all",
        "cgat.seeds": ",".join(map(str, seeds or [])) or "all",
        "cgat.suites": ",".join(suites or []) or "all",
    }
    with Tracker(f"report [{name}]", experiment=EXPERIMENT, tracking_uri=tracking_uri, tags=tags) as tracker:
        tracker.log_artifacts(sorted(p for p in out_dir.iterdir() if p.is_file()), "report")
        tracker.log_metrics({f"claims_{verdict}": float(n) for verdict, n in verdict_counts(claims).items()})
    print(f"report: {path}")
    print(f"claims: {out_dir / 'claims.md'}")
    return path


def _in_suites(runs, studies, suites: list[str]):
    """The transfer runs of these suites (pre-training runs serve every suite), and the studies of
    their experiments."""
    transfer = runs["kind"] == "transfer"
    runs = runs[~transfer | runs["suite"].isin(suites)].reset_index(drop=True)
    experiments = set(runs.loc[runs["kind"] == "transfer", "experiment"])
    return runs, studies[studies["experiment"].isin(experiments)]


def _symbol(z: int) -> str:
    from pymatgen.core.periodic_table import Element

    return Element.from_Z(z).symbol


def _report(args: argparse.Namespace) -> int:
    loaded = None
    if args.experiments is not None:
        from benchmarks.datasets import TaskData

        manifest = load_manifest(args.experiments)
        data_path = data_path_for(args.data, manifest.resolve(manifest.data.path))
        loaded = TaskData.load(manifest, data_path, args.cache_dir, progress=False).loaded
    try:
        seeds = parse_seeds(args.seeds)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    _write_report(
        resolve_tracking_uri(args.tracking_uri), args.profile, args.report_dir, loaded, seeds, _split_names(args.suite)
    )
    return 0


def add_report_command(commands: argparse._SubParsersAction) -> None:
    report = commands.add_parser("report", help="tables and figures of the paper from the tracking store")
    report.add_argument("experiments", type=Path, nargs="?", default=None,
                        help="experiments.yaml, for the dataset figures (optional)")
    report.add_argument("--profile", default="cpu", help="profile whose runs to report (default: cpu)")
    report.add_argument("--tracking-uri", default=None)
    report.add_argument("--data", type=Path, default=None)
    report.add_argument("--cache-dir", type=Path, default=None)
    report.add_argument("--report-dir", type=Path, default=DEFAULT_REPORT_DIR)
    report.add_argument("--seeds", default=None,
                        help="only transfer runs of these seeds, e.g. 0-2 or 0,1,2 (written to <profile>-seeds-0-1-2/)")
    report.add_argument("--suite", default=None,
                        help="only transfer runs of these suites, e.g. strategies (written to <profile>-strategies/)")
    report.set_defaults(handler=_report)


# --- ui ----------------------------------------------------------------------------------------
def _ui(args: argparse.Namespace) -> int:
    uri = resolve_tracking_uri(args.tracking_uri)
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1",
               "--port", str(args.port)]
    print(f"MLflow UI on http://127.0.0.1:{args.port} over {uri}")
    return subprocess.call(command)


def add_ui_command(commands: argparse._SubParsersAction) -> None:
    ui = commands.add_parser("ui", help="open the MLflow UI on 127.0.0.1 over the project's store")
    ui.add_argument("--tracking-uri", default=None)
    ui.add_argument("--port", type=int, default=5000)
    ui.set_defaults(handler=_ui)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cgat-bench", description="CGAT transfer-learning benchmark")
    commands = parser.add_subparsers(dest="command", required=True)
    add_run_command(commands)
    add_report_command(commands)
    add_tune_parser(commands)
    add_ui_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    return handler(args)


if __name__ == "__main__":
    raise SystemExit(main())
