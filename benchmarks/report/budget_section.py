"""The report's compute-budget section (the paper's Fig. 5): per-line analysis first, the plane as an extra."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from benchmarks.report import figures
from benchmarks.report.budget import (
    CURVE_COLUMNS,
    LINE_STRATEGY,
    LINE_SUMMARY_COLUMNS,
    MODEL_PLANE,
    SEED_COLUMNS,
    LineScenario,
    SeedBreakEven,
    budget_curves,
    choose_scenarios,
    line_curves,
    line_scenarios,
    line_summary_row,
    plane_fit,
    seed_break_even,
)
from benchmarks.report.markdown import MarkdownReport, fmt_size, write_csv
from benchmarks.report.tables import fmt, markdown_table

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
SEED_TABLE_COLUMNS = ("experiment", "scenario", "train_size", "pretrain_size", *SEED_COLUMNS)


def _seeds_text(seeds: Sequence[int]) -> str:
    return ("seed " if len(seeds) == 1 else "seeds ") + ", ".join(str(int(s)) for s in seeds)


def _break_even_cell(row: dict[str, object]) -> str:
    value = float(row["break_even"])  # type: ignore[arg-type]
    text = f"{value:.2f}" if math.isfinite(value) else "n/a"
    n = int(row["n_seeds"])  # type: ignore[arg-type]
    low, high = float(row["break_even_low"]), float(row["break_even_high"])  # type: ignore[arg-type]
    if math.isfinite(low) and math.isfinite(high):
        text += f" (95 %: {low:.2f}–{high:.2f}, {n} seeds)"
    else:
        text += f" (no interval, {n} seed{'s' if n != 1 else ''})"
    if int(row["n_seeds_no_ratio"]):  # type: ignore[arg-type]
        text += f"; {row['n_seeds_no_ratio']} without ratio"
    return text


def _scenario_cell(row: dict[str, object]) -> str:
    text = (
        f"{fmt_size(float(row['pretrain_size']))} / {fmt_size(float(row['train_size']))} "  # type: ignore[arg-type]
        f"(ratio {float(row['ratio']):.3g})"  # type: ignore[arg-type]
    )
    target = float(row["target_ratio"])  # type: ignore[arg-type]
    return text + (f" * wanted {target:g}" if math.isfinite(target) else "")


def _seed_notes(report: MarkdownReport, scenario: LineScenario, seeds: SeedBreakEven) -> None:
    where = f"{scenario.experiment}, scenario {scenario.name}"
    for seed in seeds.no_ratio.itertuples():
        report.note(
            f"{where}: seed {int(seed.seed)} gives no finite break-even ratio ({seed.reason}); it is counted "
            "in the table's 'without ratio' and left out of the interval, which therefore covers only the seeds "
            "where both kinds of data help"
        )
    if seeds.incomplete:
        report.note(
            f"{where}: {_seeds_text(seeds.incomplete)} lack a run at some point of the two lines and are left out "
            "of the break-even interval"
        )
    if not seeds.log_interval.known:
        report.note(
            f"{where}: no interval on the break-even ratio: {seeds.n} seed(s) with a finite ratio, two are needed"
        )


def _lines_part(
    runs: pd.DataFrame,
    points: pd.DataFrame,
    experiment: str,
    fits: pd.DataFrame,
    report: MarkdownReport,
    cost_ratio: float,
    ratios: Sequence[float],
) -> tuple[list[dict[str, object]], list[LineScenario], list[pd.DataFrame]]:
    scenarios, missing = line_scenarios(points, fits, experiment, ratios)
    if not scenarios:
        reasons = "; ".join(f"{m.pretrain_size} pre / {m.train_size} train: {m.reason}" for m in missing)
        report.note(
            f"{experiment}: per-line budget not computed: no measured full-transfer point has a fitted line over "
            f"both training and pre-training size ({reasons})"
        )
        return [], [], []
    if missing:
        report.note(
            f"{experiment}: {len(missing)} measured full-transfer point(s) are not budget scenarios, lacking a "
            "fitted line: " + "; ".join(f"{m.pretrain_size} pre / {m.train_size} train ({m.reason})" for m in missing)
        )
    rows, seed_frames = [], []
    for scenario in scenarios:
        seeds = seed_break_even(runs, scenario, cost_ratio)
        row = line_summary_row(scenario, seeds, cost_ratio)
        if row["note"]:
            report.note(f"{experiment}, scenario {scenario.name}: {row['note']}")
        _seed_notes(report, scenario, seeds)
        rows.append(row)
        seed_frames.append(
            seeds.per_seed.assign(
                experiment=experiment,
                scenario=scenario.name,
                train_size=scenario.train_size,
                pretrain_size=scenario.pretrain_size,
            )
        )
    return rows, scenarios, seed_frames


def _plane_part(
    exp_full: pd.DataFrame, experiment: str, report: MarkdownReport, cost_ratio: float, ratios: Sequence[float]
) -> tuple[dict[str, object] | None, pd.DataFrame | None]:
    try:
        plane = plane_fit(exp_full["train_size"], exp_full["pretrain_size"], exp_full["mae_mean"])
    except ValueError as err:
        report.note(f"{experiment}: plane fit not computed: {err}")
        return None, None
    if plane.n <= 3:
        report.note(f"{experiment}: the plane fit has {plane.n} points, so no uncertainty")
    scenarios = choose_scenarios(exp_full, ratios)
    start_mae = exp_full.set_index(["train_size", "pretrain_size"])["mae_mean"]
    curves = budget_curves(plane, scenarios, cost_ratio).assign(experiment=experiment, model=MODEL_PLANE)
    curves["start_mae"] = [
        float(start_mae.loc[(t, p)]) for t, p in zip(curves["start_train_size"], curves["start_pretrain_size"])
    ]
    row = {
        "experiment": experiment,
        "alpha": plane.alpha,
        "alpha_se": plane.alpha_se,
        "beta": plane.beta,
        "beta_se": plane.beta_se,
        "gamma": plane.gamma,
        "gamma_se": plane.gamma_se,
        "n_points": plane.n,
        "break_even_ratio": plane.break_even_ratio(cost_ratio),
    }
    return row, curves


def _coefficient(value: float, se: float) -> str:
    return f"{value:.3f}" + (f" ± {se:.3f}" if math.isfinite(se) else "")


def budget_section(
    runs: pd.DataFrame,
    points: pd.DataFrame,
    fits: pd.DataFrame,
    report: MarkdownReport,
    out_dir: Path,
    cost_ratio: float,
    ratios: Sequence[float],
) -> pd.DataFrame:
    """Write the compute-budget section; returns one row per scenario (``LINE_SUMMARY_COLUMNS``).

    ``runs``: one row per training run (for the seed-by-seed intervals); ``points`` and ``fits``: the
    frames of ``scaling.size_points`` and ``scaling.fit_table``; ``ratios``: the wanted N_pretrain/N_train
    of the scenarios drawn in the figure (every scenario is in the table)."""
    out_dir = Path(out_dir)
    report.section("Compute budget (Fig. 5)")
    report.text(
        f"A high-fidelity calculation costs {cost_ratio:g} units of compute, a low-fidelity one 1 unit. As in the "
        "paper, each scenario, a measured full-transfer point (N_train, N_pretrain) with a fitted line in both "
        "directions (Fig. 3), is extrapolated along its own lines: extra compute spent on high-fidelity data moves "
        "along the MAE-against-training-size line at the scenario's pre-training size, on low-fidelity data along "
        "the MAE-against-pre-training-size line at its training size. With the lines' slopes a (over N_train) and b "
        "(over N_pretrain), one more unit of compute helps equally on both sides at the break-even ratio "
        f"N_pretrain/N_train = {cost_ratio:g}·b/a; below it extra low-fidelity data helps more. The interval is a "
        "95 % t-interval over seeds of log10 of each seed's own break-even ratio (its two lines refitted on its "
        "runs alone); the ratio itself is the one of the seed-mean lines. 'Doubled' spends the starting compute "
        "N_pretrain + "
        f"{cost_ratio:g}·N_train once more, all on one side; each side's MAE comes from its own line, which need "
        "not pass through the measured MAE at the start (their values there: rows with extra_compute 0 of "
        "budget.csv). '*' marks the scenarios closest to the wanted ratios "
        f"{', '.join(f'{r:g}' for r in ratios)}, drawn in the figure."
    )
    full = points[points["strategy"] == LINE_STRATEGY]
    rows: list[dict[str, object]] = []
    curve_frames: list[pd.DataFrame] = []
    seed_frames: list[pd.DataFrame] = []
    fit_rows: list[dict[str, object]] = []
    for experiment in sorted(points["experiment"].unique()):
        exp_full = full[full["experiment"] == experiment]
        n_train, n_pre = exp_full["train_size"].nunique(), exp_full["pretrain_size"].nunique()
        if n_train < 2 or n_pre < 2:
            report.note(
                f"{experiment}: budget analysis skipped, the full-transfer runs have {n_train} training and "
                f"{n_pre} pre-training size(s); two of each are needed for a line in each direction"
            )
            continue
        exp_rows, scenarios, exp_seeds = _lines_part(runs, points, experiment, fits, report, cost_ratio, ratios)
        rows += exp_rows
        seed_frames += exp_seeds
        if scenarios:
            curve_frames.append(line_curves(scenarios, cost_ratio))
        fit_row, plane_curves = _plane_part(exp_full, experiment, report, cost_ratio, ratios)
        if fit_row is not None:
            fit_rows.append(fit_row)
            curve_frames.append(plane_curves)
    summary = pd.DataFrame(rows, columns=list(LINE_SUMMARY_COLUMNS))
    curves = pd.concat(curve_frames, ignore_index=True) if curve_frames else pd.DataFrame(columns=list(CURVE_COLUMNS))
    curves = curves[list(CURVE_COLUMNS)]
    seeds = pd.concat(seed_frames, ignore_index=True) if seed_frames else pd.DataFrame()
    seeds = seeds.reindex(columns=list(SEED_TABLE_COLUMNS))
    lines_csv = write_csv(summary, out_dir / "budget_lines.csv")
    seeds_csv = write_csv(seeds, out_dir / "budget_seeds.csv")
    curves_csv = write_csv(curves, out_dir / "budget.csv")
    fit_csv = write_csv(pd.DataFrame(fit_rows, columns=list(BUDGET_FIT_COLUMNS)), out_dir / "budget_fit.csv")

    if rows:
        header = [
            "experiment",
            "scenario N_pretrain / N_train",
            "MAE at start (measured)",
            "MAE, compute doubled on high-fidelity",
            "… on low-fidelity",
            "better first step",
            "break-even ratio (95 % interval, seeds)",
        ]
        table_rows = [
            [
                r["experiment"],
                _scenario_cell(r),
                fmt(float(r["mae_start"])),  # type: ignore[arg-type]
                fmt(float(r["mae_doubled_high"])),  # type: ignore[arg-type]
                fmt(float(r["mae_doubled_low"])),  # type: ignore[arg-type]
                r["better_first_step"],
                _break_even_cell(r),
            ]
            for r in rows
        ]
        report.table(markdown_table(header, table_rows), caption="Per-line budget, one row per scenario.")
        report.text(
            f"The table's data with both lines' slopes: [{lines_csv.name}]({lines_csv.name}); each seed's slopes "
            f"and break-even ratio: [{seeds_csv.name}]({seeds_csv.name}); curves of both models (column `model`): "
            f"[{curves_csv.name}]({curves_csv.name})."
        )
    else:
        report.text(
            f"No scenario: empty tables [{lines_csv.name}]({lines_csv.name}), [{seeds_csv.name}]({seeds_csv.name}), "
            f"[{curves_csv.name}]({curves_csv.name})."
        )

    if fit_rows:
        plane_rows = [
            [
                f["experiment"],
                _coefficient(float(f["alpha"]), float(f["alpha_se"])),  # type: ignore[arg-type]
                _coefficient(float(f["beta"]), float(f["beta_se"])),  # type: ignore[arg-type]
                f["n_points"],
                fmt(float(f["break_even_ratio"]), 3),  # type: ignore[arg-type]
            ]
            for f in fit_rows
        ]
        header = ["experiment", "α (over N_train)", "β (over N_pretrain)", "points"]
        header.append(f"break-even {cost_ratio:g}·β/α")
        report.table(
            markdown_table(header, plane_rows),
            fit_csv,
            "Extra: one plane per experiment, log10 MAE = α·log10 N_train + β·log10 N_pretrain + γ.",
        )
        report.text(
            "Limitation of the plane: it has one slope over training size for every pre-training size and one slope "
            "over pre-training size for every training size, so a single break-even ratio per experiment. The paper "
            "notes that the slope over training size changes (slightly) with the pre-training size; the per-line "
            "table above keeps those local slopes, the plane averages them away, and its standard errors are "
            "those of the seed means about the plane, not of the seeds."
        )
    else:
        report.text(f"No plane fit: empty table [{fit_csv.name}]({fit_csv.name}).")

    path = figures.budget(curves, out_dir / "budget.png")
    report.figure(
        path,
        "expected test MAE against total compute along each scenario's own lines; solid: extra compute on "
        "high-fidelity calculations, dashed: on low-fidelity ones; one colour per scenario; crosses: measured "
        "starting points; faint: the same scenarios on the plane fit",
        "budget figure: no experiment has full-transfer runs at two or more training and pre-training sizes",
    )
    return summary
