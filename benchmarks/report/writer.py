"""write_report: every table, figure and extrapolation of the benchmark, from the runs frame."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from benchmarks.manifest import Manifest, ManifestError, load_manifest
from benchmarks.report import figures
from benchmarks.report.budget import DEFAULT_RATIOS
from benchmarks.report.baselines import median_failures, source_linear_sentences
from benchmarks.report.budget_section import budget_section
from benchmarks.report.claims import claims_markdown, claims_table
from benchmarks.report.collect import RUN_COLUMNS
from benchmarks.report.comparisons import comparison_table, fmt_interval
from benchmarks.report.convergence import PIPELINE_REASON, ConvergenceGate, pretrain_table
from benchmarks.report.datasets import dataset_members, element_counts, target_stats
from benchmarks.report.markdown import MarkdownReport, fmt_range, fmt_size, write_csv
from benchmarks.report.published import published_comparison, published_markdown
from benchmarks.report.scaling import LINEAR_SIZES, extrapolations, fit_table, size_points
from benchmarks.report.strategy_costs import strategy_cost_section
from benchmarks.report.tables import (
    intra_inter,
    intra_inter_markdown,
    markdown_table,
    ordered_strategies,
    select_largest,
    table1,
    table1_markdown,
    transfer_runs,
    fmt,
    strategy_label,
)
from cgat_dgl.baselines import FITTED

def _check_runs(runs: pd.DataFrame) -> pd.DataFrame:
    optional = {
        "pretrain_run_id": None,
        "joint_run_id": None,
        "source_ratio": math.nan,
        "suite": "paper",
        "trained_structures": math.nan,
        "total_trained_structures": math.nan,
        "split_seed": 0,
        "run_key": None,  # runs made outside a manifest have none
        "software": "unrecorded",
        "results_version": "unrecorded",
        "machine": "unrecorded",
        "threads": "unrecorded",
        "duration_s": math.nan,
        "start_time": math.nan,
        "end_time": math.nan,
        # runs from before early stopping: the gate reads a missing stop reason as not converged
        "best_epoch": math.nan,
        "epochs_run": math.nan,
        "stop_reason": None,
        "converged": None,
        "train_seconds": math.nan,
        "pretrain_seed": math.nan,  # frames from before the column: one pre-trained model per source
    }
    missing = [c for c in RUN_COLUMNS if c not in runs.columns and c not in optional]
    if missing:
        raise ValueError(f"runs frame lacks columns {missing}; build it with collect_runs")
    runs = runs.copy()
    for column, default in optional.items():
        if column not in runs:
            runs[column] = default
    runs["suite"] = runs["suite"].fillna("paper")  # transfer runs from before the tag belong to the paper's suite
    for column in ("train_size", "pretrain_size"):
        bad = runs.loc[pd.to_numeric(runs[column], errors="coerce").isna(), "run_id"].tolist()
        if bad:
            raise ValueError(f"runs frame: {column} is missing or not a number for runs {bad[:5]}")
        runs[column] = runs[column].astype(int)
    return runs


def _manifest_of(manifest: Manifest | None, sources: Mapping[str, str] | None) -> Manifest | None:
    """The manifest given, else the one ``sources`` names when it can be read (``cgat-bench`` passes its
    path there): its pre-training targets and profiles decide which verdicts stand."""
    if manifest is not None or not sources or not sources.get("manifest"):
        return manifest
    path = Path(sources["manifest"])
    if not path.is_file():
        return None
    try:
        return load_manifest(path)
    except ManifestError:
        return None


def _gate(runs: pd.DataFrame, manifest: Manifest | None) -> ConvergenceGate:
    """The convergence gate of these runs, from their own profile names (before any renaming)."""
    failed = median_failures(runs)
    if manifest is None:
        return ConvergenceGate(failed_runs=failed)
    profiles = set(runs["profile"].dropna().astype(str))
    checks = {p for p in profiles if p in manifest.profiles and manifest.profiles[p].pipeline_check}
    return ConvergenceGate(
        pretrain_targets=dict(manifest.pretrain_targets),
        pipeline_runs=frozenset(runs.loc[runs["profile"].isin(checks), "run_id"].astype(str)),
        pipeline_check=bool(profiles) and profiles == checks,
        failed_runs=failed,
    )


PIPELINE_HEADING = "Pipeline check: no verdicts"
PIPELINE_TEXT = (
    "These runs come from a profile that only checks the pipeline (`pipeline_check: true` in the "
    "manifest): they are trained far from convergence on purpose, so this report states no verdicts. "
    f"Every check of the paper's claims is `not converged` (reason: {PIPELINE_REASON}); the numbers "
    "show that every table and figure can be computed, not what the benchmark finds."
)


def _separate_versions(runs: pd.DataFrame, report: MarkdownReport) -> pd.DataFrame:
    """Runs of different code or package versions are not compared with each other: each version's
    runs are reported as experiments of their own (as profiles are)."""
    versions = sorted(runs["results_version"].fillna("unrecorded").unique())
    if len(versions) > 1:
        runs["profile"] = runs["profile"].astype(str) + " / " + runs["results_version"].fillna("unrecorded").astype(str)
        report.note(
            f"the runs come from {len(versions)} results versions ({'; '.join(versions)}): each version's runs are "
            "separate experiments, never paired or pooled with another's"
        )
    return runs


def _separate_profiles(runs: pd.DataFrame, report: MarkdownReport) -> pd.DataFrame:
    """Runs of several profiles are different experiments (other sizes and budgets): keep them apart."""
    profiles = sorted(runs["profile"].dropna().unique())
    if len(profiles) > 1:
        runs["experiment"] = runs["experiment"].astype(str) + " [" + runs["profile"].astype(str) + "]"
        report.note(f"runs of several profiles ({', '.join(profiles)}) are reported as separate experiments")
    return runs


# With several splits, a replicate is a (split seed, seed) pair, numbered split_seed * SPLIT_STRIDE + seed.
SPLIT_STRIDE = 1000


def _replicates(runs: pd.DataFrame, report: MarkdownReport) -> pd.DataFrame:
    """Seeds pair runs on one split; runs of several splits pair by (split seed, seed)."""
    splits = sorted(int(s) for s in runs.loc[runs["kind"] == "transfer", "split_seed"].dropna().unique())
    if len(splits) > 1:
        runs["seed"] = runs["split_seed"].astype(int) * SPLIT_STRIDE + runs["seed"].astype(int)
        report.note(
            f"runs of {len(splits)} splits (split seeds {', '.join(map(str, splits))}): a replicate is a "
            f"(split seed, seed) pair, numbered split_seed × {SPLIT_STRIDE} + seed, so intervals include the "
            "variation between splits"
        )
    return runs


def _software_note(runs: pd.DataFrame, report: MarkdownReport) -> None:
    """Which code and packages the rows come from; a warning when they are mixed."""
    counts = runs["software"].fillna("unrecorded").value_counts()
    report.text("Software of these runs: " + "; ".join(f"{name} ({n} runs)" for name, n in counts.items()) + ".")
    if len(counts) > 1:
        report.note(
            f"the runs come from {len(counts)} different versions of the code or its packages (column "
            "`software` of runs.csv): comparisons across them mix software changes with the effects measured; "
            "a fresh tracking store gives a single version"
        )


def _table1_section(runs: pd.DataFrame, comparisons: pd.DataFrame, report: MarkdownReport, out_dir: Path,
                    errors: Mapping[str, pd.Series] | None = None) -> pd.DataFrame:
    report.section("Table 1: test MAE per strategy (largest training and pre-training sizes)")
    table = table1(runs, errors)
    csv = write_csv(table, out_dir / "table1.csv")
    markdown = table1_markdown(table) if len(table) else "(no finished transfer runs)\n"
    (out_dir / "table1.md").write_text(markdown, encoding="utf-8")
    report.text(
        "Mean test MAE with its 95 % interval in brackets (none with one seed), at each "
        "experiment's largest training size and, for transfers, largest pre-training size. Where every run "
        "of a cell logged its predictions, the interval is a bootstrap over its seeds and the test materials "
        "(a new test set moves an MAE as much as a new seed does); a cell whose runs span several splits or "
        "pre-trained models gives the mean of split means of model means of seed means and a nested "
        "bootstrap over splits, the models of a split and the seeds of a model as well; otherwise (the "
        "pre-training column, subsets of the test set) Student's t over the seeds or the runs' own values "
        "level by level. table1.csv names each cell's interval and each level's share of its variance (with "
        "two or three splits or models, a bootstrap cannot reach beyond the values seen at that level: read "
        "such a level's share as a warning, not its interval as wide enough); in parentheses the "
        "reduction of the mean MAE relative to no transfer (its interval is in the paired comparisons below); "
        "[n=] the number of runs (seeds × pre-trained models × splits); bold the best strategy. The pre-training column is the "
        "pre-trained model's own test MAE on the source property (the paper's PBE column). Rows with a "
        "`test_mae_<subset>` metric are evaluated on that subset of the test set only. The baselines "
        "(training median, pre-trained model as is, linear in element fractions, source value as is and "
        "linearly corrected) are fitted on the same training subsets as the transfers, with the same seeds."
    )
    if table.empty:
        report.note("no finished transfer runs: Table 1 is empty")
    report.table(markdown, csv)
    report.text("The same table alone: [table1.md](table1.md).")
    for sentence in source_linear_sentences(comparisons):
        report.note(sentence)
    if len(table) and not (table["strategy"] == "pretrain").any():
        report.note("no pre-training run could be linked to any experiment: the pre-training column is empty")
    return table


def _published_section(table: pd.DataFrame, report: MarkdownReport, out_dir: Path) -> None:
    frame = published_comparison(table)
    if frame.empty:
        return
    report.section("Beside published models")
    report.text(
        "This report's pre-trained models on their own property, and for each target the best strategy of Table 1 "
        "that needs no source calculation of the material it predicts (and the best of all where that one needs "
        "it), beside published test MAEs on Materials Project data. The published numbers are not runs of this "
        "store: other data sizes, splits and test sets (the protocol column), so the comparison gives the scale "
        "of the errors, not a verdict. Intervals: those of Table 1."
    )
    report.table(published_markdown(frame), write_csv(frame, out_dir / "published.csv"))


def _delta_known_note(strategies: object, report: MarkdownReport) -> None:
    """Wherever delta_known numbers appear, say that it needs the source value of what it predicts."""
    if "delta_known" in set(pd.Series(strategies, dtype=object).dropna()):
        report.note(
            f"delta_known ({strategy_label('delta_known')}) needs the source (e.g. PBE) value of every material "
            "it predicts: its rows use a calculation the other strategies do without (Table 1, †)"
        )


def _strategies_text(runs: pd.DataFrame) -> str:
    present = ordered_strategies(transfer_runs(runs)["strategy"].dropna().unique())
    return "Strategies: " + ", ".join(f"{s} = {strategy_label(s)}" for s in present) + "." if present else ""


def _shares_text(row: Any) -> str:
    """Each level's share of the variance, "–" for a level the runs do not vary."""
    shares = [getattr(row, f"share_{level}", math.nan) for level in ("splits", "models", "seeds", "materials")]
    if not math.isfinite(row.share_seeds):
        return "–"
    return " / ".join(f"{100 * share:.0f}" if math.isfinite(share) else "–" for share in shares)


def _comparison_section(comparisons: pd.DataFrame, report: MarkdownReport, out_dir: Path) -> None:
    report.section("Paired comparisons of the strategies")
    csv = write_csv(comparisons, out_dir / "comparisons.csv")
    report.text(
        "MAE(a) − MAE(b) seed by seed (same split, same training subset, same seed), its mean and 95 % "
        "interval: a bootstrap over the seeds both strategies ran and the test materials (crossed: every seed "
        "scored the same materials) where every run logged its predictions, with each level's share of the "
        "variance, else the t-interval over the seeds; a cell with one common seed gets a percentile "
        "bootstrap over its test materials. Runs over several splits or pre-trained models (pre-training "
        "seeds) add those levels: a nested bootstrap over splits, the models of a split, the seeds of a model "
        "and each split's own test materials. Where the runs come from one split and one pre-trained model "
        "per source, the intervals do not cover the variation between splits or pre-trainings. Negative: a is better. In percent of b: the mean of the seeds' own ratios 100 × (a / b − 1) with its t-interval (one common seed: the difference over b's MAE; over several splits or pre-trained models: each replicate's own ratio, level by level, with the nested bootstrap over them). "
        "Runs that depend on the target alone (no transfer, the training median, the composition baseline) are shared by the experiments with the same target."
    )
    if comparisons.empty:
        report.note("no experiment has two strategies to compare")
        report.table("(none)\n", csv)
        return
    rows = [
        [
            r.experiment,
            r.metric,
            r.train_size,
            f"{r.a} − {r.b}",
            fmt_interval(r.diff, r.diff_low, r.diff_high),
            fmt_interval(r.pct, r.pct_low, r.pct_high, digits=2, unit=" %"),
            r.n,
            r.method,
            _shares_text(r),
        ]
        for r in comparisons.itertuples()
    ]
    header = ["experiment", "metric", "N train", "a − b", "Δ MAE [95 %]", "Δ % of b [95 %]", "n", "interval",
              "variance % splits / models / seeds / materials"]  # fmt: skip
    report.table(markdown_table(header, rows), csv)
    _delta_known_note(comparisons["a"], report)


def _claims_section(claims: pd.DataFrame, gate: ConvergenceGate, report: MarkdownReport, out_dir: Path) -> None:
    report.section("Claims of the paper: verdicts")
    csv = write_csv(claims, out_dir / "claims.csv")
    markdown = claims_markdown(claims)
    pipeline = f"## {PIPELINE_HEADING}\n\n{PIPELINE_TEXT}\n\n" if gate.pipeline_check else ""
    (out_dir / "claims.md").write_text("# Claims of the paper: verdicts\n\n" + pipeline + markdown, encoding="utf-8")
    report.text(
        "Each finding of the paper, checked on every task it applies to. `reproduced`: the 95 % interval "
        "lies entirely on the paper's side; `contradicted`: entirely on the other; `inconclusive`: it crosses "
        "the boundary, or no interval exists. `not converged`, whatever the interval: a transfer run the check "
        "rests on did not stop on a validation plateau (it hit its epoch cap, or predates early stopping), the "
        f"pre-training it starts from missed its property's target test MAE by more than {gate.slack:g}×, or "
        "its runs come from a pipeline-check profile; the detail names why and what the interval alone said. "
        "A check's contradiction stands only after Holm's correction over its claim's family (every check of "
        "the claim with a p-value, recovered from its interval; the family's size is in the summary), since "
        "a claim is contradicted if any check is; "
        "a claim is contradicted if any check is, else not converged if any check is, else reproduced only "
        "if all its checks are. The same table alone: [claims.md](claims.md)."
    )
    report.table(markdown, csv)


def _provenance_section(runs: pd.DataFrame, report: MarkdownReport, sources: Mapping[str, str] | None = None) -> None:
    """What the report knows about how its runs were made: seeds, machines, threads, software, time."""
    report.section("About these runs")
    if sources:
        report.text("Computed from " + "; ".join(f"{k}: `{v}`" for k, v in sources.items()) + " ([sources.md](sources.md)).")
    transfer = runs[runs["kind"] == "transfer"]
    seeds = sorted(int(s) for s in transfer["seed"].dropna().unique())
    report.text(f"Transfer seeds: {', '.join(map(str, seeds)) or 'none'}.")
    for column, what in (("machine", "Machines"), ("threads", "Torch threads per run")):
        counts = runs[column].fillna("unrecorded").astype(str).value_counts()
        report.text(f"{what}: " + "; ".join(f"{name} ({n} runs)" for name, n in counts.items()) + ".")
    _software_note(runs, report)
    durations = pd.to_numeric(runs["duration_s"], errors="coerce")
    start, end = pd.to_numeric(runs["start_time"], errors="coerce"), pd.to_numeric(runs["end_time"], errors="coerce")
    if durations.notna().any():
        span = (end.max() - start.min()) / 1000.0
        report.text(
            f"Training time: {durations.sum() / 60:.1f} min summed over the runs; {span / 60:.1f} min from the "
            "first run's start to the last run's end (with parallel workers the sum exceeds the span)."
        )
    else:
        report.text("Training time: not recorded for these runs.")


def _stop_counts(runs: pd.DataFrame) -> str:
    """How the transfer runs stopped, e.g. "40 on a validation plateau, 2 at their epoch cap"."""
    stop = runs[runs["kind"] == "transfer"].drop_duplicates("run_id")["stop_reason"]  # a shared run once
    counts = stop.fillna("unrecorded").value_counts()
    names = {"plateau": "on a validation plateau", "cap": "at their epoch cap", FITTED: "fitted in closed form (baselines)",
             "unrecorded": "without a recorded stop reason"}
    return ", ".join(f"{n} {names.get(str(reason), str(reason))}" for reason, n in counts.items()) or "none"


def _convergence_section(
    runs: pd.DataFrame, histories: Mapping[str, pd.DataFrame], gate: ConvergenceGate, report: MarkdownReport, out_dir: Path
) -> None:
    report.section("Convergence of the runs and the pre-trained models")
    report.text(
        f"Transfer runs stopped: {_stop_counts(runs)}. A check resting on a run that did not stop on a "
        "plateau states no verdict (`not converged`)."
    )
    table = pretrain_table(runs, gate)
    csv = write_csv(table, out_dir / "pretrain_models.csv")
    if table.empty:
        report.note("no pre-training runs: no pre-trained models to show")
        return
    rows = [
        [
            r.property,
            fmt_size(r.pretrain_size),
            fmt(r.test_mae),
            fmt(r.target),
            "n/a" if not math.isfinite(r.ratio) else f"{r.ratio:.2f}×",
            "n/a" if pd.isna(r.best_epoch) else int(r.best_epoch) + 1,
            "n/a" if pd.isna(r.epochs_run) else int(r.epochs_run),
            r.stop_reason if isinstance(r.stop_reason, str) else "unrecorded",
            "n/a" if pd.isna(r.train_seconds) else f"{r.train_seconds:.0f}",
            ("gates verdicts" if r.judged else "judged by the largest") if math.isfinite(r.target) else "no target",
        ]
        for r in table.itertuples()
    ]
    header = ["property", "N pretrain", "test MAE", "target", "ratio", "best epoch", "epochs run", "stop reason",
              "train seconds", "target check"]  # fmt: skip
    caption = (
        "Each pre-trained model: its test MAE on its own property against the target of the manifest "
        f"(`pretrain_targets`); a ratio above {gate.slack:g} turns the checks resting on the property's "
        "pre-training into `not converged`. The target is checked on the largest pre-training run of each "
        "property, profile and split; smaller pre-training sets share its recipe. Best epoch counted from 1; "
        "train seconds: wall time of its training epochs over every resumption (a shipped model's from its card; the run's wall time where it logged none)."
    )
    report.table(markdown_table(header, rows), csv, caption)
    pretrain = runs[runs["kind"] == "pretrain"]
    path = figures.pretrain_curves(
        pretrain, histories, gate.pretrain_targets, out_dir / "pretrain_curves.png", slack=gate.slack
    )
    report.figure(
        path,
        "validation (solid) and training (dashed) MAE against epoch of each pre-training run, one panel per "
        f"property, log scale; star: the best epoch; dotted: the property's target, dash-dotted: {gate.slack:g} × target",
        "pre-training curves: no per-epoch validation MAE was logged for the pre-training runs",
    )


def _learning_curve_section(
    runs: pd.DataFrame, histories: Mapping[str, pd.DataFrame], report: MarkdownReport, out_dir: Path
) -> None:
    report.section("Learning curves (Fig. 1, 6, 7)")
    transfer = transfer_runs(runs)
    selected = pd.concat([select_largest(g) for _, g in transfer.groupby("experiment")]) if len(transfer) else transfer
    path = figures.learning_curves(selected, histories, out_dir / "learning_curves.png")
    report.figure(
        path,
        "validation MAE against epoch, one panel per experiment, one line per strategy "
        "(mean over seeds, band: ± one std), at the largest sizes",
        "learning curves: no per-epoch validation MAE was logged for the selected runs",
    )
    if path:
        _delta_known_note(selected["strategy"], report)


def _scaling_section(points: pd.DataFrame, fits: pd.DataFrame, report: MarkdownReport, out_dir: Path) -> None:
    report.section("MAE against dataset size (Fig. 3, 4, 8)")
    csv = write_csv(fits, out_dir / "fits.csv")
    report.text(
        "Least-squares lines through (log10 N, log10 MAE) of the seed means, log10 MAE = slope · log10 N + "
        "intercept, with standard errors from the residuals (none with fewer than three sizes). The slope's "
        "95 % interval comes from one line fitted per seed (t over the seeds' slopes): the spread a rerun "
        f"would show. All fits: [{csv.name}]({csv.name})."
    )
    fitted = fits[fits["slope"].notna()]
    if len(fitted):
        rows = [
            [
                r.experiment,
                r.strategy,
                "training" if r.x == "train_size" else "pre-training",
                fmt_size(r.pretrain_size) if r.x == "train_size" else fmt_size(r.train_size),
                fmt_interval(r.slope, r.slope_low, r.slope_high),
                f"{r.intercept:.3f}",
                r.n_points,
                r.n_seed_fits,
            ]
            for r in fitted.itertuples()
        ]
        header = ["experiment", "strategy", "MAE against", "at fixed other size", "slope [95 % over seeds]",
                  "intercept", "sizes", "seeds"]  # fmt: skip
        report.table(markdown_table(header, rows))
    _delta_known_note(points["strategy"], report)
    path = figures.loglog_train(points, fits, out_dir / "loglog_train_size.png")
    report.figure(
        path,
        "test MAE against training-set size per strategy and pre-training size (error bars: std over seeds), "
        "with the fitted lines; legend: slope and intercept ± standard error",
        "no transfer runs with a test MAE: no log-log plot",
    )
    unfit = fits[fits["note"].astype(str) != ""]
    for row in unfit.itertuples():
        where = f"{row.experiment}, {row.strategy}" + (
            f", pre-training {int(row.pretrain_size)}" if row.x == "train_size" else f", training {int(row.train_size)}"
        )
        report.note(f"fit of MAE against {row.x.replace('_', ' ')} ({where}): {row.note}")
    path = figures.loglog_pretrain(points, fits, out_dir / "loglog_pretrain_size.png")
    report.figure(
        path,
        "test MAE against pre-training-set size, one line per training-set size, with the fitted lines",
        "MAE against pre-training size: no experiment ran a transfer strategy with two or more pre-training sizes",
    )


def _extrapolation_section(points: pd.DataFrame, fits: pd.DataFrame, report: MarkdownReport, out_dir: Path) -> None:
    report.section("Extrapolations")
    table = extrapolations(points, fits)
    csv = write_csv(table, out_dir / "extrapolations.csv")
    report.text(
        "(a) Training size at which the no-transfer and transfer lines meet: beyond it transfer stops "
        "helping (the paper finds 1.6 M for SCAN E_hull). (b) Training size no transfer would need to match "
        "the best measured transfer MAE (the paper's 613 k), and that size as a multiple of the training "
        "size the transfer used. Ranges are one standard error of log10 N, propagated from the fits. A "
        f"line is extrapolated as a line only if it passed the linearity test ({LINEAR_SIZES} sizes or more, no "
        "lack of fit against the seed replicates); rows resting on another are for reference only."
    )
    if table.empty:
        report.note("no experiment has transfer runs: no extrapolation")
        report.table("(none)\n", csv)
        return
    rows = [
        [
            r.experiment,
            r.strategy,
            fmt_size(r.pretrain_size),
            _crossing_cell(r),
            f"{fmt(r.best_mae)} at {fmt_size(r.best_train_size)}",
            fmt_range(r.none_size_to_match, r.none_size_low, r.none_size_high),
            "n/a" if not math.isfinite(r.match_factor) else f"{r.match_factor:.1f}×",
            "; ".join(dict.fromkeys(filter(None, [
                "" if r.linear else "a line fails the linearity test: for reference only", r.crossing_note, r.match_note
            ]))),  # fmt: skip
        ]
        for r in table.itertuples()
    ]
    header = [
        "experiment",
        "strategy",
        "N pretrain",
        "(a) lines meet at",
        "best transfer MAE",
        "(b) no transfer needs",
        "factor",
        "notes",
    ]
    report.table(markdown_table(header, rows), csv)
    _delta_known_note(table["strategy"], report)


def _crossing_cell(row: Any) -> str:
    if math.isfinite(row.crossing_train_size):
        return fmt_range(row.crossing_train_size, row.crossing_low, row.crossing_high)
    return "n/a" if str(row.crossing_note).startswith("not computed") else "no crossing"


def _intra_inter_section(
    runs: pd.DataFrame, points: pd.DataFrame, fits: pd.DataFrame, report: MarkdownReport, out_dir: Path
) -> None:
    report.section("Intra- against inter-property transfer (Fig. 6-8)")
    table = intra_inter(runs)
    csv = write_csv(table, out_dir / "intra_inter.csv")
    if table.empty:
        report.note("no target is reached from two different source properties: no intra/inter comparison")
        report.text(f"Empty table: [{csv.name}]({csv.name}).")
    else:
        caption = "Improvement over no transfer, per source property, at the largest pre-training size."
        report.table(intra_inter_markdown(table), csv, caption)
        _delta_known_note(table["strategy"], report)
    path = figures.intra_inter(points, fits, sorted(table["target"].unique()), out_dir / "intra_inter.png")
    report.figure(
        path,
        "full-transfer test MAE against training size per source property, and no transfer, "
        "for each target reached from several sources",
        "intra/inter figure: nothing to compare",
    )


def _fidelity_columns(runs: pd.DataFrame, targets: pd.DataFrame | None) -> tuple[list[str], list[str]]:
    transfer = transfer_runs(runs)
    low = set(transfer.loc[transfer["strategy"] != "none", "source"].dropna())
    low |= set(runs.loc[runs["kind"] == "pretrain", "target"].dropna())
    high = set(transfer["target"].dropna()) - low
    if not low and not high and targets is not None:
        low = {c for c in targets.columns if c.endswith("_pbe")}
        high = set(targets.columns) - low
    return sorted(low), sorted(high)


def _dataset_section(
    runs: pd.DataFrame,
    targets: pd.DataFrame | None,
    elements: Mapping[str, list[str]] | None,
    report: MarkdownReport,
    out_dir: Path,
) -> None:
    report.section("The datasets (Fig. 2, 9)")
    if targets is None:
        report.note("no targets table was given: no target distributions")
    else:
        stats = target_stats(targets)
        csv = write_csv(stats, out_dir / "target_stats.csv")
        header = ["property", "count", "mean", "median", "std", "fraction zero"]
        rows = [
            [r.property, r.count, fmt(r.mean), fmt(r.median), fmt(r.std), fmt(r.fraction_zero, 3)]
            for r in stats.itertuples()
        ]
        report.table(markdown_table(header, rows), csv)
        path = figures.target_distributions(targets, out_dir / "target_distributions.png")
        report.figure(
            path,
            "distribution of each property, fidelities of one property overlaid (central 99.8% of values)",
            "target distributions: the targets table holds no values",
        )
    if elements is None:
        report.note("no element lists were given: no element counts")
        return
    low, high = _fidelity_columns(runs, targets)
    counts = element_counts(elements, dataset_members(targets, elements, low, high))
    csv = write_csv(counts, out_dir / "element_counts.csv")
    report.text(f"Element counts per dataset: [{csv.name}]({csv.name}).")
    path = figures.element_counts(counts, out_dir / "element_counts.png")
    report.figure(
        path,
        "number of compounds containing each element, per dataset",
        "element counts: no material of any dataset has an element list",
    )


def write_report(
    runs: pd.DataFrame,
    histories: Mapping[str, pd.DataFrame],
    out_dir: Path,
    *,
    targets: pd.DataFrame | None = None,
    elements: dict[str, list[str]] | None = None,
    cost_ratio: float = 5.0,
    budget_ratios: Sequence[float] = DEFAULT_RATIOS,
    errors: Mapping[str, pd.Series] | None = None,
    studies: pd.DataFrame | None = None,
    sources: Mapping[str, str] | None = None,
    manifest: Manifest | None = None,
) -> Path:
    """Write every table, figure and report.md under ``out_dir``; returns the path of report.md.

    ``sources`` (e.g. the store's redacted URI and the manifest) are named in "About these runs", so
    a report found on disk says what it was computed from.

    ``errors`` (run id -> absolute test error per material, ``collect_test_errors``) gives single-seed
    comparisons a bootstrap interval; ``studies`` (``collect_study_trials``) checks the tuning claim.

    ``manifest`` (else the one ``sources["manifest"]`` names) gives the pre-training targets and says
    which profiles are pipeline checks; without one, only the runs' stop reasons gate the verdicts."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = MarkdownReport("Transfer-learning benchmark report", out_dir)
    runs = _check_runs(runs)
    gate = _gate(runs, _manifest_of(manifest, sources))
    if gate.pipeline_check:
        report.section(PIPELINE_HEADING)
        report.text(PIPELINE_TEXT)
    runs = _replicates(_separate_profiles(_separate_versions(runs, report), report), report)
    write_csv(runs, out_dir / "runs.csv")
    transfer_ids = runs.loc[runs["kind"] == "transfer", "run_id"]
    n_transfer = int(transfer_ids.nunique())
    n_pretrain = int((runs["kind"] == "pretrain").sum())
    n_shared = int(transfer_ids.duplicated().groupby(transfer_ids).any().sum())
    shared = f" ({n_shared} of them serve several experiments, a row in runs.csv for each)" if n_shared else ""
    report.text(
        f"{n_transfer} finished transfer runs{shared} and {n_pretrain} pre-training runs in "
        f"{runs.loc[runs['kind'] == 'transfer', 'experiment'].nunique()} experiments "
        f"(profiles: {', '.join(sorted(runs['profile'].dropna().astype(str).unique())) or 'none'}); "
        "every number below is read from these runs ([runs.csv](runs.csv)). " + _strategies_text(runs)
    )
    points = size_points(runs)
    fits = fit_table(points, runs)
    comparisons = comparison_table(runs, errors)
    # the budget section is computed first (the claims need it) and placed later in the report
    budget_report = MarkdownReport(report.title, out_dir)
    budget = budget_section(runs, points, fits, budget_report, out_dir, cost_ratio, budget_ratios)
    claims = claims_table(runs, comparisons, fits, budget=budget, studies=studies, errors=errors, gate=gate)
    _claims_section(claims, gate, report, out_dir)
    _provenance_section(runs, report, sources)
    _convergence_section(runs, histories, gate, report, out_dir)
    table = _table1_section(runs, comparisons, report, out_dir, errors)
    _published_section(table, report, out_dir)
    strategy_cost_section(runs, report, out_dir)
    _comparison_section(comparisons, report, out_dir)
    _learning_curve_section(runs, histories, report, out_dir)
    _scaling_section(points, fits, report, out_dir)
    _extrapolation_section(points, fits, report, out_dir)
    report.blocks.extend(budget_report.blocks)
    _intra_inter_section(runs, points, fits, report, out_dir)
    _dataset_section(runs, targets, elements, report, out_dir)
    return report.write()
