"""write_report: every table, figure and extrapolation of the benchmark, from the runs frame."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from benchmarks.report import figures
from benchmarks.report.budget import (
    BUDGET_COLUMNS,
    DEFAULT_RATIOS,
    budget_curves,
    better_option,
    choose_scenarios,
    plane_fit,
)
from benchmarks.report.collect import RUN_COLUMNS
from benchmarks.report.datasets import dataset_members, element_counts, target_stats
from benchmarks.report.markdown import MarkdownReport, fmt_range, fmt_size
from benchmarks.report.scaling import extrapolations, fit_table, size_points
from benchmarks.report.tables import (
    intra_inter,
    intra_inter_markdown,
    markdown_table,
    select_largest,
    table1,
    table1_markdown,
    transfer_runs,
    fmt,
)

BUDGET_FIT_COLUMNS = (
    "experiment",
    "alpha",
    "alpha_se",
    "beta",
    "beta_se",
    "gamma",
    "gamma_se",
    "n_points",
    "break_even_ratio",
)


def _check_runs(runs: pd.DataFrame) -> pd.DataFrame:
    optional = {"pretrain_run_id": None, "software": "unrecorded"}
    missing = [c for c in RUN_COLUMNS if c not in runs.columns and c not in optional]
    if missing:
        raise ValueError(f"runs frame lacks columns {missing}; build it with collect_runs")
    runs = runs.copy()
    for column, default in optional.items():
        if column not in runs:
            runs[column] = default
    for column in ("train_size", "pretrain_size"):
        bad = runs.loc[pd.to_numeric(runs[column], errors="coerce").isna(), "run_id"].tolist()
        if bad:
            raise ValueError(f"runs frame: {column} is missing or not a number for runs {bad[:5]}")
        runs[column] = runs[column].astype(int)
    return runs


def _separate_profiles(runs: pd.DataFrame, report: MarkdownReport) -> pd.DataFrame:
    """Runs of several profiles are different experiments (other sizes and budgets): keep them apart."""
    profiles = sorted(runs["profile"].dropna().unique())
    if len(profiles) > 1:
        runs["experiment"] = runs["experiment"].astype(str) + " [" + runs["profile"].astype(str) + "]"
        report.note(f"runs of several profiles ({', '.join(profiles)}) are reported as separate experiments")
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


def _write_csv(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, index=False)
    return path


def _table1_section(runs: pd.DataFrame, report: MarkdownReport, out_dir: Path) -> None:
    report.section("Table 1: test MAE per strategy (largest training and pre-training sizes)")
    table = table1(runs)
    csv = _write_csv(table, out_dir / "table1.csv")
    markdown = table1_markdown(table) if len(table) else "(no finished transfer runs)\n"
    (out_dir / "table1.md").write_text(markdown, encoding="utf-8")
    report.text(
        "Mean ± standard deviation over seeds of the test MAE, at each experiment's largest training size "
        "and, for transfers, largest pre-training size; in parentheses the reduction of the MAE relative to "
        "no transfer; [n] the number of seeds; bold the best strategy. The pre-training column is the "
        "pre-trained model's own test MAE on the source property (the paper's PBE column). Rows with a "
        "`test_mae_<subset>` metric are evaluated on that subset of the test set only."
    )
    if table.empty:
        report.note("no finished transfer runs: Table 1 is empty")
    report.table(markdown, csv)
    report.text("The same table alone: [table1.md](table1.md).")
    if len(table) and not (table["strategy"] == "pretrain").any():
        report.note("no pre-training run could be linked to any experiment: the pre-training column is empty")


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


def _scaling_section(points: pd.DataFrame, fits: pd.DataFrame, report: MarkdownReport, out_dir: Path) -> None:
    report.section("MAE against dataset size (Fig. 3, 4, 8)")
    csv = _write_csv(fits, out_dir / "fits.csv")
    report.text(
        "Least-squares lines through (log10 N, log10 MAE) of the seed means, log10 MAE = slope · log10 N + "
        "intercept, with standard errors from the residuals (none with fewer than three sizes). "
        f"All fits: [{csv.name}]({csv.name})."
    )
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
    csv = _write_csv(table, out_dir / "extrapolations.csv")
    report.text(
        "(a) Training size at which the no-transfer and transfer lines meet: beyond it transfer stops "
        "helping (the paper finds 1.6 M for SCAN E_hull). (b) Training size no transfer would need to match "
        "the best measured transfer MAE (the paper's 613 k), and that size as a multiple of the training "
        "size the transfer used. Ranges are one standard error of log10 N, propagated from the fits."
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
            "; ".join(dict.fromkeys(filter(None, [r.crossing_note, r.match_note]))),
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


def _crossing_cell(row: Any) -> str:
    if math.isfinite(row.crossing_train_size):
        return fmt_range(row.crossing_train_size, row.crossing_low, row.crossing_high)
    return "n/a" if str(row.crossing_note).startswith("not computed") else "no crossing"


def _budget_section(
    points: pd.DataFrame, report: MarkdownReport, out_dir: Path, cost_ratio: float, ratios: Sequence[float]
) -> None:
    report.section("Compute budget (Fig. 5)")
    report.text(
        "Plane fit over the full-transfer runs of an experiment, log10 MAE = α·log10 N_train + β·log10 "
        f"N_pretrain + γ; a high-fidelity calculation costs {cost_ratio:g} units, a low-fidelity one 1 unit. "
        f"Scenarios start at the measured (N_train, N_pretrain) closest to N_pretrain/N_train = "
        f"{', '.join(f'{r:g}' for r in ratios)} and spend extra compute on either side. Extra low-fidelity "
        "data pays off more while N_pretrain/N_train is below the break-even ratio cost_ratio·β/α."
    )
    curve_frames, fit_rows, summary = [], [], []
    full = points[points["strategy"] == "full"]
    for experiment in sorted(points["experiment"].unique()):
        exp_full = full[full["experiment"] == experiment]
        n_train, n_pre = exp_full["train_size"].nunique(), exp_full["pretrain_size"].nunique()
        if n_train < 2 or n_pre < 2:
            report.note(
                f"{experiment}: budget analysis skipped, the full-transfer runs have {n_train} training and "
                f"{n_pre} pre-training size(s); two of each are needed"
            )
            continue
        try:
            plane = plane_fit(exp_full["train_size"], exp_full["pretrain_size"], exp_full["mae_mean"])
        except ValueError as err:
            report.note(f"{experiment}: budget analysis skipped: {err}")
            continue
        scenarios = choose_scenarios(exp_full, ratios)
        curves = budget_curves(plane, scenarios, cost_ratio)
        curve_frames.append(curves.assign(experiment=experiment))
        break_even = plane.break_even_ratio(cost_ratio)
        fit_rows.append(
            {
                "experiment": experiment,
                "alpha": plane.alpha,
                "alpha_se": plane.alpha_se,
                "beta": plane.beta,
                "beta_se": plane.beta_se,
                "gamma": plane.gamma,
                "gamma_se": plane.gamma_se,
                "n_points": plane.n,
                "break_even_ratio": break_even,
            }
        )
        if plane.n <= 3:
            report.note(f"{experiment}: the plane fit has {plane.n} points, so no uncertainty")
        for scenario in scenarios:
            # the starting compute spent once more, all on one side
            extra = scenario.pretrain_size + cost_ratio * scenario.train_size
            doubled_high = plane.predict(scenario.train_size + extra / cost_ratio, scenario.pretrain_size)
            doubled_low = plane.predict(scenario.train_size, scenario.pretrain_size + extra)
            summary.append(
                [
                    experiment,
                    f"{fmt_size(scenario.pretrain_size)} / {fmt_size(scenario.train_size)} "
                    f"(wanted {scenario.target_ratio:g})",
                    fmt(plane.predict(scenario.train_size, scenario.pretrain_size)),
                    fmt(float(doubled_high)),
                    fmt(float(doubled_low)),
                    better_option(plane, scenario, cost_ratio),
                    f"{break_even:.2f}",
                ]
            )
    if curve_frames:
        curves_all = pd.concat(curve_frames, ignore_index=True)
    else:
        curves_all = pd.DataFrame(columns=list(BUDGET_COLUMNS))
    csv = _write_csv(curves_all[list(BUDGET_COLUMNS)], out_dir / "budget.csv")
    fit_csv = _write_csv(pd.DataFrame(fit_rows, columns=list(BUDGET_FIT_COLUMNS)), out_dir / "budget_fit.csv")
    if fit_rows:
        header = [
            "experiment",
            "scenario N_pretrain / N_train",
            "MAE at start",
            "MAE, compute doubled on high-fidelity",
            "… on low-fidelity",
            "better first step",
            "break-even ratio",
        ]
        report.table(markdown_table(header, summary), csv)
        report.text(f"Plane coefficients: [{fit_csv.name}]({fit_csv.name}).")
    else:
        report.text(f"Empty tables: [{csv.name}]({csv.name}), [{fit_csv.name}]({fit_csv.name}).")
    path = figures.budget(curves_all, out_dir / "budget.png")
    report.figure(
        path,
        "expected test MAE against total compute; solid: extra compute on high-fidelity calculations, "
        "dashed: on low-fidelity ones; crosses: measured starting points",
        "budget figure: no experiment has full-transfer runs at two or more training and pre-training sizes",
    )


def _intra_inter_section(
    runs: pd.DataFrame, points: pd.DataFrame, fits: pd.DataFrame, report: MarkdownReport, out_dir: Path
) -> None:
    report.section("Intra- against inter-property transfer (Fig. 6-8)")
    table = intra_inter(runs)
    csv = _write_csv(table, out_dir / "intra_inter.csv")
    if table.empty:
        report.note("no target is reached from two different source properties: no intra/inter comparison")
        report.text(f"Empty table: [{csv.name}]({csv.name}).")
    else:
        caption = "Improvement over no transfer, per source property, at the largest pre-training size."
        report.table(intra_inter_markdown(table), csv, caption)
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
        csv = _write_csv(stats, out_dir / "target_stats.csv")
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
    csv = _write_csv(counts, out_dir / "element_counts.csv")
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
) -> Path:
    """Write every table, figure and report.md under ``out_dir``; returns the path of report.md."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = MarkdownReport("Transfer-learning benchmark report", out_dir)
    runs = _separate_profiles(_check_runs(runs), report)
    _write_csv(runs, out_dir / "runs.csv")
    n_transfer = int((runs["kind"] == "transfer").sum())
    n_pretrain = int((runs["kind"] == "pretrain").sum())
    report.text(
        f"{n_transfer} finished transfer runs and {n_pretrain} pre-training runs in "
        f"{runs.loc[runs['kind'] == 'transfer', 'experiment'].nunique()} experiments "
        f"(profiles: {', '.join(sorted(runs['profile'].dropna().astype(str).unique())) or 'none'}); "
        "every number below is read from these runs ([runs.csv](runs.csv)). Strategies: none = no transfer, "
        "head = only regression head, full = full transfer."
    )
    _software_note(runs, report)
    points = size_points(runs)
    fits = fit_table(points)
    _table1_section(runs, report, out_dir)
    _learning_curve_section(runs, histories, report, out_dir)
    _scaling_section(points, fits, report, out_dir)
    _extrapolation_section(points, fits, report, out_dir)
    _budget_section(points, report, out_dir, cost_ratio, budget_ratios)
    _intra_inter_section(runs, points, fits, report, out_dir)
    _dataset_section(runs, targets, elements, report, out_dir)
    return report.write()
