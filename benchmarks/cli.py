"""``cgat-bench``: the benchmark's command line. Each subcommand is a parser plus a handler.

    cgat-bench run experiments.yaml --profile cpu [--dry-run] [--only A,B] [--suite S] [--workers N]
    cgat-bench report [experiments.yaml] [--profile cpu] [--seeds 0-2] [--splits 1] [--suite S] [--out DIR]
    cgat-bench tune experiments.yaml --study NAME
    cgat-bench ui

Default paths follow the user, not the install (``benchmarks.paths``): the store, ``runs/`` and the
reports lie beside the command's manifest, or in the working directory; a report goes beside the
store it reads, with a ``sources.md`` naming that store and the manifest.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks.data_checks import DataCheckError, check_manifest_data
from benchmarks.manifest import Manifest, ManifestError, load_manifest
from benchmarks.paths import command_paths, data_path_for, report_name
from benchmarks.store import EXPERIMENT
from benchmarks.summary import SHARED_DATA_ENV, DatasetSummary
from benchmarks.server import add_server_parser, export_password_env
from benchmarks.tuning import add_tune_parser
from cgat_dgl.data.leakage import LeakageError
from cgat_dgl.training.tracking import default_base, redact_uri, resolve_tracking_uri

Handler = Callable[[argparse.Namespace], int]
SOURCES_FILE = "sources.md"


# --- shared by the commands ------------------------------------------------------------------
def with_split_seed(manifest: Manifest, split_seed: int | None) -> Manifest:
    """The manifest with another 80/10/10 split (a replication over splits), or unchanged."""
    if split_seed is None:
        return manifest
    # model_copy keeps the private attributes (the manifest's path and lines for error messages)
    return manifest.model_copy(update={"data": manifest.data.model_copy(update={"split_seed": split_seed})})


def with_pretrain_seed(manifest: Manifest, profile: str, pretrain_seed: int | None) -> Manifest:
    """The manifest whose profile pre-trains with another seed (a replication over pre-trained
    models: new pre-trainings, and new runs for the strategies that start from them), or unchanged."""
    if pretrain_seed is None:
        return manifest
    profiles = dict(manifest.profiles)
    profiles[profile] = manifest.profile(profile).model_copy(update={"pretrain_seed": pretrain_seed})
    return manifest.model_copy(update={"profiles": profiles})


def add_replication_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("--split-seed", type=int, default=None,
                         help="another 80/10/10 split (default: the manifest's data.split_seed): new pre-trainings and runs")
    command.add_argument("--pretrain-seed", type=int, default=None,
                         help="pre-train with another seed (default: the profile's pretrain_seed): new pre-trained "
                              "models and the runs that start from them")


def replicated_manifest(args: argparse.Namespace) -> Manifest:
    """The manifest of the command's profile under its --split-seed and --pretrain-seed; sets args.profile."""
    manifest = with_split_seed(load_manifest(args.experiments), args.split_seed)
    args.profile = manifest.profile_name(args.profile)
    return with_pretrain_seed(manifest, args.profile, args.pretrain_seed)


def _split_names(text: str | None) -> list[str] | None:
    return [name.strip() for name in text.split(",") if name.strip()] if text else None


# --- run ---------------------------------------------------------------------------------------
def _run(args: argparse.Namespace) -> int:
    from benchmarks.runner import Runner, RunnerOptions

    paths = command_paths(args.experiments, args.tracking_uri, args.work_dir, args.report_dir)
    try:
        manifest = replicated_manifest(args)
        data_path = data_path_for(args.data, manifest.resolve(manifest.data.path))
        # a misspelt property or a too small task stops here, before anything is listed or trained
        check_manifest_data(manifest, data_path)
        options = RunnerOptions(
            profile=args.profile,
            data_path=data_path,
            work_dir=paths.work_dir,
            tracking_uri=paths.tracking_uri,
            cache_dir=args.cache_dir,
            only=_split_names(args.only),
            suites=_split_names(args.suite),
            workers=args.workers,
            progress=not args.no_progress,
            pretrain_only=args.pretrain_only,
            use_shipped=not args.retrain_pretrained,
        )
        runner = Runner(manifest, options)
        start = time.perf_counter()
        runner.check_data()  # loads the data: the pre-training splits after the leakage rule
    except (ManifestError, DataCheckError, FileNotFoundError, KeyError, LeakageError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    statuses = runner.status()
    if args.dry_run:
        print(f"store {redact_uri(paths.tracking_uri)}, work dir {paths.work_dir}")
        for spec, status in statuses:
            print(f"{status:<9} {spec.key}  {spec.label}")
        counts: dict[str, int] = {}
        for _, status in statuses:
            counts[status] = counts.get(status, 0) + 1
        print(f"{len(statuses)} runs: " + ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items())))
        return 0
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
    if not args.no_report and not args.pretrain_only:
        sources = ReportSources(runner.store.tracking_uri, args.experiments, args.profile, None, _split_names(args.suite),
                                data_path=runner.options.data_path)
        _write_report(sources, paths.report_root, paths.work_dir, data.loaded)
    return 1 if outcome.failed else 0


def add_run_command(commands: argparse._SubParsersAction) -> None:
    run = commands.add_parser("run", help="run the experiments of a manifest (idempotent, resumable)")
    run.add_argument("experiments", type=Path, help="experiments.yaml")
    run.add_argument("--profile", default=None, help="manifest profile (default: the manifest's only one)")
    run.add_argument("--data", type=Path, default=None, help=f"data file (default: ${SHARED_DATA_ENV} or the manifest's)")
    run.add_argument("--cache-dir", type=Path, default=None, help="graph cache (default: the manifest's data.cache_dir)")
    run.add_argument("--work-dir", type=Path, default=None,
                     help="checkpoints and run locks (default: runs/ beside the manifest)")
    run.add_argument("--tracking-uri", default=None,
                     help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else mlflow/mlflow.db beside the manifest)")
    run.add_argument("--only", default=None, help="comma list of experiment names")
    run.add_argument("--suite", default=None, help="comma list of suites (experiments' suite field; default: all)")
    run.add_argument("--workers", type=int, default=None,
                     help="processes sharing the store (default: the profile's workers)")
    add_replication_options(run)
    run.add_argument("--retrain-pretrained", action="store_true",
                     help="train every pre-training even where a shipped model (pretrained_models/) matches it")
    run.add_argument("--pretrain-only", action="store_true",
                     help="only the pre-trainings the selected experiments start from (no transfers, no report)")
    run.add_argument("--dry-run", action="store_true", help="list the runs and which already exist")
    run.add_argument("--no-report", action="store_true", help="skip the report at the end")
    _add_report_dir_option(run)
    run.add_argument("--no-progress", action="store_true",
                     help="no progress bars: one plain line per run")
    run.set_defaults(handler=_run)


# --- report ------------------------------------------------------------------------------------
def parse_seeds(text: str | None, option: str = "--seeds") -> list[int] | None:
    """"0,1,2" or "0-2" (or a mix, "0-2,5") as a sorted list of seeds."""
    if not text:
        return None
    seeds: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        low, _, high = part.partition("-")
        if not low.isdigit() or (high and not high.isdigit()) or (high and int(high) < int(low)):
            raise ValueError(f"{option}: {part!r} is not a seed or a range like 0-2")
        seeds.update(range(int(low), int(high or low) + 1))
    if not seeds:
        raise ValueError(f"{option}: no seed in {text!r}")
    return sorted(seeds)


@dataclass(frozen=True)
class ReportSources:
    """What a report is computed from. Written beside it (``sources.md``) and logged with it, so a
    report found on disk names the store and manifest it came from (URI without its password)."""

    tracking_uri: str
    manifest: Path | None = None
    profile: str | None = None
    seeds: list[int] | None = None
    suites: list[str] | None = None
    compare_to: Path | None = None  # an earlier report whose verdicts this one's are compared with
    data_path: Path | None = None  # with the manifest: only runs of its current plan are reported
    splits: list[int] | None = None  # only runs (pre-trainings too) on these split seeds

    @property
    def name(self) -> str:
        return report_name(self.profile, self.seeds, self.suites, self.splits)

    def markdown(self, written: datetime.datetime) -> str:
        manifest = f"`{Path(self.manifest).resolve()}`" if self.manifest is not None else "none given"
        lines = [
            "# Sources of this report",
            "",
            f"- Store: `{redact_uri(self.tracking_uri)}`",
            f"- Manifest: {manifest}",
            f"- Profile: {self.profile or 'all'}",
            f"- Seeds (transfer runs): {', '.join(map(str, self.seeds)) if self.seeds is not None else 'all'}",
            f"- Suites: {', '.join(self.suites) if self.suites else 'all'}",
            f"- Splits (every run, pre-trainings too): {', '.join(map(str, self.splits)) if self.splits is not None else 'all'}",
            *([f"- Verdicts compared with: `{self.compare_to}` ([verdict_changes.md](verdict_changes.md))"]
              if self.compare_to is not None else []),
            f"- Written: {written.isoformat(timespec='seconds')}",
        ]
        return "\n".join(lines) + "\n"


def write_sources(sources: ReportSources, out_dir: Path) -> Path:
    """``sources.md`` in the report's folder (the report writer itself knows only the runs)."""
    path = Path(out_dir) / SOURCES_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(sources.markdown(datetime.datetime.now(datetime.timezone.utc)))
    return path


def _write_report(sources: ReportSources, report_root: Path, work_dir: Path, loaded=None) -> Path:
    """Write the report of ``sources`` to ``<report_root>/<name>/`` with its ``sources.md``, and log
    both as artifacts of a ``report`` run in the same store."""
    import pandas as pd

    from benchmarks.report import collect_runs, write_report
    from benchmarks.report.claims import verdict_counts
    from benchmarks.report.collect import collect_study_trials, collect_test_errors
    from benchmarks.store import EXPERIMENT, Store, close_interrupted_runs
    from cgat_dgl.training.tracking import Tracker

    tracking_uri, profile, seeds, suites = sources.tracking_uri, sources.profile, sources.seeds, sources.suites
    runs, histories = collect_runs(tracking_uri, profile=profile, experiment_name=EXPERIMENT)
    runs = current_runs(runs, sources)
    studies = _current_studies(collect_study_trials(tracking_uri, profile=profile, experiment_name=EXPERIMENT), sources)
    name = sources.name
    if seeds is not None:
        # pre-training runs are shared by every seed's transfers; only transfers are filtered
        runs = runs[(runs["kind"] != "transfer") | runs["seed"].isin(seeds)].reset_index(drop=True)
        studies = studies[studies["seed"].isin(seeds)]
    if suites:
        runs, studies = _in_suites(runs, studies, suites)
    if sources.splits is not None:
        runs, studies = in_splits(runs, studies, sources.splits)
    # per-material errors serve the comparisons of transfers and trials; pre-training runs need none
    transfers = runs.loc[runs["kind"] == "transfer", "run_id"]
    errors = collect_test_errors(tracking_uri, [*transfers, *studies["run_id"]])
    out_dir = Path(report_root) / name
    targets = elements = None
    if loaded is not None:
        targets = loaded.targets
        elements = {
            material: sorted({_symbol(int(z)) for z in graph.comp_elements})
            for material, graph in loaded.graphs.items()
        }
    named = {"store": redact_uri(tracking_uri), "manifest": str(sources.manifest or "none given")}
    path = write_report(
        runs, histories, out_dir, targets=targets, elements=elements, errors=errors, studies=studies, sources=named
    )
    sources_path = write_sources(sources, out_dir)
    claims = pd.read_csv(out_dir / "claims.csv")
    if sources.compare_to is not None:
        from benchmarks.report.verdict_changes import write_verdict_changes

        print(f"verdict changes: {write_verdict_changes(sources.compare_to, claims, out_dir)}")
    tags = {
        "cgat.kind": "report",
        "cgat.profile": profile or "all",
        "cgat.seeds": ",".join(map(str, seeds or [])) or "all",
        "cgat.suites": ",".join(suites or []) or "all",
    }
    run_name = f"report [{name}]"
    store = Store(tracking_uri, work_dir)
    # Under the claim a RUNNING report run of this name has no live writer: it was killed.
    with store.claim(f"report-{name}", wait=True):
        same_report = f"tags.`cgat.kind` = 'report' and attributes.run_name = '{run_name}'"
        for run_id in close_interrupted_runs(store.client, store.experiment_id, same_report):
            print(f"closed the interrupted report run {run_id} (KILLED)")
        with Tracker(run_name, experiment=EXPERIMENT, tracking_uri=tracking_uri, tags=tags) as tracker:
            tracker.log_artifacts(sorted(p for p in out_dir.iterdir() if p.is_file()), "report")
            tracker.log_metrics({f"claims_{verdict}": float(n) for verdict, n in verdict_counts(claims).items()})
        table1 = out_dir / "table1.csv"
        if seeds is None and sources.splits is None and profile is not None and table1.is_file():  # every seed and split
            from benchmarks.report.parents import annotate_parents

            annotated = annotate_parents(store.client, store.experiment_id, profile, pd.read_csv(table1), tracker.run_id)
            if annotated:
                print(f"results logged on the parent runs of {', '.join(annotated)}")
    print(f"report: {path}")
    print(f"claims: {out_dir / 'claims.md'}")
    print(f"sources: {sources_path}")
    return path


def in_splits(runs, studies, splits: list[int]):
    """The runs on these split seeds, pre-trainings included, and the studies if split 0 is one of them
    (studies tune on split 0). Another split is another test set and other pre-trained models: a report
    of disjoint splits is an independent replication of one over the others."""
    kept = runs[runs["split_seed"].astype(int).isin(splits)].reset_index(drop=True)
    return kept, studies if 0 in splits else studies.iloc[0:0]


def current_runs(runs, sources: ReportSources):
    """The runs the manifest would make now (their keys are in its plan, on every split and
    pre-training seed the store holds); a run of the same profile with other settings (an earlier epoch cap, say) or other data is
    left out, and said so, rather than mixed into the tables."""
    if sources.manifest is None or sources.data_path is None or sources.profile is None or runs.empty:
        return runs
    from benchmarks.datasets import TaskData
    from benchmarks.plan import expand

    manifest = load_manifest(sources.manifest)
    data_key = TaskData.file_key(sources.data_path)
    keys: set[str] = set()
    pretrain_seeds = sorted(set(runs.loc[runs["kind"] == "pretrain", "seed"].dropna().astype(int))) or [None]
    for split_seed in sorted(set(runs["split_seed"].dropna().astype(int))):
        for pretrain_seed in pretrain_seeds:
            planned = with_pretrain_seed(with_split_seed(manifest, split_seed), sources.profile, pretrain_seed)
            pretrains, transfers = expand(planned, sources.profile, data_key=data_key)
            keys |= {spec.key for spec in [*pretrains, *transfers]}
    current = runs["run_key"].isin(keys)
    if not current.all():
        print(f"left out {int((~current).sum())} finished runs of profile {sources.profile!r} that the manifest "
              "would not make now (other settings, data or code version)")
    return runs[current].reset_index(drop=True)


def _current_studies(studies, sources: ReportSources):
    """The trials of the manifest's studies (``<study>`` or, run per strategy, ``<study>-<strategy>``);
    a study the manifest no longer holds (renamed when its search space changed) is left out, and said so."""
    if sources.manifest is None or studies.empty:
        return studies
    from cgat_dgl.strategies import strategies

    names = {study.name for study in load_manifest(sources.manifest).studies}
    names |= {f"{name}-{strategy}" for name in names for strategy in strategies()}
    current = studies["study"].isin(names)
    if not current.all():
        left = sorted(set(studies.loc[~current, "study"]))
        print(f"left out the trials of {len(left)} studies the manifest no longer holds: {', '.join(left)}")
    return studies[current].reset_index(drop=True)


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
    try:
        seeds = parse_seeds(args.seeds)
        splits = parse_seeds(args.splits, "--splits")
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    paths = command_paths(args.experiments, args.tracking_uri, report_dir=args.report_dir)
    loaded = None
    if args.experiments is not None:
        from benchmarks.datasets import TaskData

        manifest = load_manifest(args.experiments)
        try:
            args.profile = manifest.profile_name(args.profile)
        except KeyError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        data_path = data_path_for(args.data, manifest.resolve(manifest.data.path))
        loaded = TaskData.load(manifest, data_path, args.cache_dir, progress=False).loaded
    if args.compare_to is not None and not args.compare_to.exists():
        print(f"error: --compare-to {args.compare_to}: no such report folder or claims.csv", file=sys.stderr)
        return 2
    sources = ReportSources(paths.tracking_uri, args.experiments, args.profile, seeds, _split_names(args.suite),
                            args.compare_to, data_path if args.experiments is not None else None, splits)
    _write_report(sources, paths.report_root, paths.work_dir, loaded)
    return 0


def _add_report_dir_option(parser: argparse.ArgumentParser) -> None:
    """``--out`` and its old name ``--report-dir``, so earlier commands still write where they did."""
    parser.add_argument(
        "--out", "--report-dir", dest="report_dir", type=Path, default=None, metavar="DIR",
        help="folder of the reports, each in DIR/<name>/ (default: reports/ beside a SQLite store, "
        "else mlflow/reports/<store>/ beside the manifest or in the working directory)",
    )


def add_report_command(commands: argparse._SubParsersAction) -> None:
    report = commands.add_parser("report", help="tables and figures of the paper from the tracking store")
    report.add_argument("experiments", type=Path, nargs="?", default=None,
                        help="experiments.yaml, for the dataset figures (optional)")
    report.add_argument("--profile", default=None,
                        help="profile whose runs to report (default: the manifest's only one; without a manifest, every profile)")
    report.add_argument("--tracking-uri", default=None,
                        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else mlflow/mlflow.db beside "
                        "the manifest, or in the working directory without one)")
    report.add_argument("--data", type=Path, default=None)
    report.add_argument("--cache-dir", type=Path, default=None)
    _add_report_dir_option(report)
    report.add_argument("--seeds", default=None,
                        help="only transfer runs of these seeds, e.g. 0-2 or 0,1,2 (written to <profile>-seeds-0-1-2/)")
    report.add_argument("--splits", default=None,
                        help="only runs on these split seeds, pre-trainings included, e.g. 1 (written to "
                        "<profile>-split-1/): reports of disjoint splits share no test set or pre-trained model")
    report.add_argument("--suite", default=None,
                        help="only transfer runs of these suites, e.g. strategies (written to <profile>-strategies/)")
    report.add_argument("--compare-to", type=Path, default=None, metavar="REPORT",
                        help="an earlier report's folder (or its claims.csv): write verdict_changes.md, its verdicts "
                        "against this report's, claim by claim")
    report.set_defaults(handler=_report)


# --- pretrained ----------------------------------------------------------------------------------
def _pretrained(args: argparse.Namespace) -> int:
    """List the profile's pre-trainings with their store status and the shipped model serving each;
    with --export, write every finished one as a shipped model with its card."""
    from benchmarks import pretrained
    from benchmarks.runner import Runner, RunnerOptions

    paths = command_paths(args.experiments, args.tracking_uri, args.work_dir, None)
    try:
        manifest = replicated_manifest(args)
        data_path = data_path_for(args.data, manifest.resolve(manifest.data.path))
        runner = Runner(manifest, RunnerOptions(profile=args.profile, data_path=data_path, work_dir=paths.work_dir,
                                                tracking_uri=paths.tracking_uri, cache_dir=args.cache_dir,
                                                pretrain_only=True, progress=False))
    except (ManifestError, FileNotFoundError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    root = args.out or manifest.resolve(manifest.pretrained_models)
    states = runner.store.runs_by_key()
    for spec in runner.pretrains:
        state = states.get(spec.key)
        shipped = pretrained.find_shipped(spec, root, runner.task_data)
        line = f"{state.status if state else 'NEW':<9} {spec.key}  {spec.label}"
        line += f"  shipped: {shipped.folder.name}" if shipped else "  shipped: none"
        if args.export and state is not None and state.finished:
            run = runner.store.run(state.run_id)
            if pretrained.SHIPPED_TAG in run.data.tags:
                line += " (the run is that shipped model)"
            else:
                card = pretrained.export_model(spec, run, paths.work_dir, runner.task_data, root,
                                               manifest.pretrain_targets.get(spec.prop))
                line += f"  -> exported {root / card.name} (test MAE {card.test_mae:.4g}, {card.stop_reason})"
        print(line, flush=True)
    if args.export:
        pretrained.write_index(root)
    return 0


def add_pretrained_command(commands: argparse._SubParsersAction) -> None:
    command = commands.add_parser("pretrained", help="the shipped pre-trained models: list, or export finished pre-trainings")
    command.add_argument("experiments", type=Path, help="experiments.yaml")
    command.add_argument("--profile", default=None, help="manifest profile (default: the manifest's only one)")
    command.add_argument("--data", type=Path, default=None, help=f"data file (default: ${SHARED_DATA_ENV} or the manifest's)")
    command.add_argument("--cache-dir", type=Path, default=None)
    command.add_argument("--tracking-uri", default=None)
    command.add_argument("--work-dir", type=Path, default=None,
                         help="the checkpoints of the runs (as cgat-bench run --work-dir; default: runs/ beside the manifest)")
    command.add_argument("--out", type=Path, default=None,
                         help="folder of the shipped models (default: the manifest's pretrained_models)")
    command.add_argument("--export", action="store_true",
                         help="write each finished pre-training as a shipped model (checkpoint, card.json, README.md)")
    add_replication_options(command)
    command.set_defaults(handler=_pretrained)


# --- ui ----------------------------------------------------------------------------------------
def _ui(args: argparse.Namespace) -> int:
    """Print the benchmark's page and become the MLflow UI server: stopping this process stops it."""
    from mlflow.tracking import MlflowClient

    from cgat_dgl.training.tracking import EXPERIMENT_TAGS

    uri = resolve_tracking_uri(args.tracking_uri, default_base())  # no manifest: the working directory's store
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1",
               "--port", str(args.port)]
    page = f"http://127.0.0.1:{args.port}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is not None:
        for key, value in EXPERIMENT_TAGS.items():  # stores made before the tag: open in the training view
            if experiment.tags.get(key) != value:
                client.set_experiment_tag(experiment.experiment_id, key, value)
        page += f"/#/experiments/{experiment.experiment_id}/runs?compareRunsMode=CHART"  # every metric charted
    print(f"MLflow UI over {redact_uri(uri)}: {page}", flush=True)
    # MLflow 3's job runner (GenAI jobs, huey processes that outlive a stopped server) has nothing to do here
    env = dict(os.environ)
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    os.execve(sys.executable, command, env)  # the server replaces this process, so its signals reach it
    return 0  # not reached


def add_ui_command(commands: argparse._SubParsersAction) -> None:
    ui = commands.add_parser("ui", help="open the MLflow UI on 127.0.0.1 over the project's store")
    ui.add_argument("--tracking-uri", default=None,
                    help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else ./mlflow/mlflow.db)")
    ui.add_argument("--port", type=int, default=5000)
    ui.set_defaults(handler=_ui)


def _dashboard(args: argparse.Namespace) -> int:
    """Serve the project's Optuna studies with optuna-dashboard on 127.0.0.1, in this process (stopping
    it stops the server)."""
    import optuna_dashboard

    from benchmarks.tuning.storage import default_storage_url, display_url

    base = Path(args.manifest).absolute().parent if args.manifest is not None else None
    storage = args.storage or default_storage_url(base)
    if storage.startswith("sqlite:///") and not Path(storage.removeprefix("sqlite:///")).is_file():
        print(f"cgat-bench dashboard: no Optuna storage at {storage} (cgat-bench tune writes it); "
              "--storage names another", file=sys.stderr)
        return 2
    print(f"Optuna dashboard over {display_url(storage)}: http://127.0.0.1:{args.port}/dashboard", flush=True)
    optuna_dashboard.run_server(storage, host="127.0.0.1", port=args.port)
    return 0


def add_dashboard_command(commands: argparse._SubParsersAction) -> None:
    dashboard = commands.add_parser("dashboard", help="serve the Optuna studies with optuna-dashboard on 127.0.0.1")
    dashboard.add_argument("manifest", nargs="?", type=Path, default=None,
                           help="its studies' storage is mlflow/optuna.db beside it (default: the working directory's)")
    dashboard.add_argument("--storage", default=None, help="an Optuna RDB URL instead (as cgat-bench tune --storage)")
    dashboard.add_argument("--port", type=int, default=8080)
    dashboard.set_defaults(handler=_dashboard)


def _diff_runs(args: argparse.Namespace) -> int:
    """Exit 0 when two reports' runs computed the same numbers, 1 when not, 2 on unreadable input."""
    from benchmarks.runs_diff import diff_runs, read_runs, summary

    try:
        a, b = read_runs(args.a), read_runs(args.b)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    diff = diff_runs(a, b)
    print(summary(diff, args.a, args.b, shown=args.show, subset=args.subset))
    return 0 if (diff.b_within_a if args.subset else diff.same) else 1


def add_diff_runs_command(commands: argparse._SubParsersAction) -> None:
    command = commands.add_parser("diff-runs", help="whether two reports' runs computed the same numbers, value by value")
    command.add_argument("a", type=Path, help="a report folder or its runs.csv")
    command.add_argument("b", type=Path, help="another report folder or runs.csv")
    command.add_argument("--show", type=int, default=20, help="differences listed (default 20)")
    command.add_argument("--subset", action="store_true",
                         help="succeed when every run of b is in a with the same values (a may hold more runs, "
                         "e.g. a committed report over more suites than the rerun of one)")
    command.set_defaults(handler=_diff_runs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cgat-bench", description="CGAT transfer-learning benchmark")
    commands = parser.add_subparsers(dest="command", required=True)
    add_run_command(commands)
    add_report_command(commands)
    add_tune_parser(commands)
    add_ui_command(commands)
    add_dashboard_command(commands)
    add_pretrained_command(commands)
    add_diff_runs_command(commands)
    add_server_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    export_password_env()  # every subcommand may reach a database store (run, report, tune, ui)
    handler: Handler = args.handler
    return handler(args)


if __name__ == "__main__":
    raise SystemExit(main())
