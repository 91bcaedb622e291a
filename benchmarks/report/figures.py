"""The report's figures. Each function takes tidy frames, writes one PNG and returns its path, or
returns None when there is nothing to draw (the caller says so in the report). A figure that fails
to draw returns a ``NotDrawn`` with the reason instead of ending the report: the runs are trained by
then, and every other table and figure is still worth writing."""

from __future__ import annotations

import functools
import itertools
import math
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from benchmarks.report.budget import MODEL_LINES, MODEL_PLANE, SPEND_HIGH, SPEND_LOW  # noqa: E402
from benchmarks.report.datasets import periodic_position, property_groups  # noqa: E402
from benchmarks.report.scaling import fit_from_row, geometric_grid  # noqa: E402
from benchmarks.report.tables import ordered_strategies, strategy_label  # noqa: E402
from cgat_dgl.strategies import BASELINE, REGISTRY  # noqa: E402



@dataclass(frozen=True)
class NotDrawn:
    """A figure that failed to draw, and why; false, like a figure with nothing to draw."""

    name: str
    reason: str

    def __bool__(self) -> bool:
        return False


Draw = TypeVar("Draw", bound=Callable[..., Any])


def _drawn(draw: Draw) -> Draw:
    @functools.wraps(draw)
    def guarded(*args: Any, **kwargs: Any) -> Path | None | NotDrawn:
        path = kwargs.get("path", args[-1] if args else None)
        try:
            return draw(*args, **kwargs)
        except Exception as error:  # a figure must not cost the report
            plt.close("all")
            name = Path(path).name if path is not None else draw.__name__
            where = traceback.extract_tb(error.__traceback__)[-1]
            reason = f"{type(error).__name__}: {error} ({Path(where.filename).name}:{where.lineno})"
            print(f"warning: figure {name} not drawn: {reason}", flush=True)
            return NotDrawn(name, reason)

    return guarded  # type: ignore[return-value]


DPI = 110
PANEL = 4.2
NONE_COLOR = REGISTRY[BASELINE].color
PRETRAIN_COLOR = "silver"


def strategy_color(name: str) -> str:
    """One colour per strategy wherever a figure has a single line per strategy (the registry's)."""
    if name == "pretrain":
        return PRETRAIN_COLOR
    entry = REGISTRY.get(name)
    return entry.color if entry is not None else "tab:olive"


def _panels(n: int, per_row: int = 3, height: float = PANEL) -> tuple[plt.Figure, list[plt.Axes]]:
    cols = min(n, per_row)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(PANEL * 1.25 * cols, height * rows), squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _log_axes(ax: plt.Axes, **labels: str) -> None:
    """Log-log axes with plain tick labels (0.3 rather than 3x10^-1). MAEs often span less than a
    decade, leaving no major tick, so minor ticks on the MAE axis are labelled in that case."""
    ax.set(xscale="log", yscale="log", **labels)
    ax.autoscale_view()
    plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{float(f'{v:.2g}'):g}")

    def minor(value: float, _: int) -> str:
        low, high = sorted(ax.yaxis.get_view_interval())
        return plain(value) if low > 0 and math.log10(high / low) < 1.3 else ""

    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(minor))
    ax.tick_params(which="minor", labelsize=6)


def _reference_line(name: str) -> bool:
    """No transfer and the baselines are drawn dashed: the lines the transfers are measured against."""
    entry = REGISTRY.get(name)
    return name == BASELINE or (entry is not None and entry.is_baseline)


def _shades(strategy: str, n: int) -> list[tuple[float, float, float]]:
    # per strategy, shades for its pre-training sizes; hues kept apart from no transfer's orange
    entry = REGISTRY.get(strategy)
    palette = entry.palette if entry is not None and strategy != BASELINE else "Greys"
    return sns.color_palette(palette, n + 2)[2:] if n else []


@_drawn
def learning_curves(selected: pd.DataFrame, histories: Mapping[str, pd.DataFrame], path: Path) -> Path | None:
    """Validation MAE against epoch, one panel per experiment, mean over seeds with a std band."""
    frames = []
    for run in selected.itertuples():
        history = histories.get(run.run_id)
        if history is None or history.empty or history["val_mae"].isna().all():
            continue
        curve = history[["epoch", "val_mae"]]
        frames.append(curve.assign(experiment=run.experiment, strategy=run.strategy, seed=run.seed))
    if not frames:
        return None
    data = pd.concat(frames, ignore_index=True).dropna(subset=["val_mae"])
    experiments = sorted(data["experiment"].unique())
    fig, axes = _panels(len(experiments))
    for ax, experiment in zip(axes, experiments):
        panel = data[data["experiment"] == experiment]
        strategies = ordered_strategies(panel["strategy"].unique())
        palette = {strategy_label(s): strategy_color(s) for s in strategies}
        panel = panel.assign(strategy=panel["strategy"].map(strategy_label))
        sns.lineplot(
            data=panel,
            x="epoch",
            y="val_mae",
            hue="strategy",
            hue_order=list(palette),
            palette=palette,
            errorbar="sd",
            ax=ax,
        )
        ax.set_title(experiment)
        ax.set_ylabel("validation MAE")
    return _save(fig, path)


@_drawn
def pretrain_curves(
    pretrain: pd.DataFrame,
    histories: Mapping[str, pd.DataFrame],
    targets: Mapping[str, float],
    path: Path,
    slack: float | None = None,
) -> Path | None:
    """Validation (solid) and training (dashed) MAE per epoch of each pre-training run, one panel per
    property on a log MAE axis; a marker at the run's best epoch, a grey line at the property's target
    (and, with ``slack``, a fainter one at slack x target, above which its verdicts are refused)."""
    curves = {
        run.run_id: histories[run.run_id]
        for run in pretrain.itertuples()
        if run.run_id in histories and histories[run.run_id]["val_mae"].notna().any()
    }
    if not curves:
        return None
    drawn = pretrain[pretrain["run_id"].isin(set(curves))]
    properties = sorted(drawn["target"].astype(str).unique())
    fig, axes = _panels(len(properties))
    for ax, prop in zip(axes, properties):
        runs = drawn[drawn["target"] == prop].sort_values(["train_size", "profile"])
        colors = sns.color_palette("viridis", len(runs))
        for color, run in zip(colors, runs.itertuples()):
            history = curves[run.run_id].dropna(subset=["val_mae"])
            label = f"N {int(run.train_size)}" + (f" ({run.profile})" if drawn["profile"].nunique() > 1 else "")
            ax.plot(history["epoch"], history["val_mae"], "-", color=color, label=f"{label} validation")
            ax.plot(history["epoch"], history["train_mae"], "--", color=color, alpha=0.6, label=f"{label} training")
            # the logged best epoch, else (runs from before it) the lowest validation MAE
            best_epoch = getattr(run, "best_epoch", math.nan)
            at = history[history["epoch"] == best_epoch] if pd.notna(best_epoch) else history.nsmallest(1, "val_mae")
            ax.plot(at["epoch"], at["val_mae"], "*", color=color, markersize=11, markeredgecolor="black")
        if prop in targets:
            ax.axhline(targets[prop], color="tab:gray", linestyle=":", label=f"target {targets[prop]:g}")
            if slack is not None:
                ax.axhline(slack * targets[prop], color="tab:gray", linestyle="-.", alpha=0.5, label=f"{slack:g} × target")
        ax.set(yscale="log", xlabel="epoch", ylabel="MAE", title=f"pre-training {prop}")
        ax.legend(fontsize=6.5)
    return _save(fig, path)


def _draw_series(
    ax: plt.Axes,
    xs: pd.Series,
    points: pd.DataFrame,
    fit_row: pd.Series | None,
    color: object,
    label: str,
    dashed: bool = False,
) -> None:
    """Seed means with std error bars, and the fitted line over the measured range."""
    ax.errorbar(xs, points["mae_mean"], yerr=points["mae_std"].fillna(0.0), fmt="o", color=color, capsize=3)
    fit = fit_from_row(fit_row) if fit_row is not None else None
    if fit is not None:
        grid = geometric_grid(float(xs.min()), float(xs.max()))
        label = f"{label}: {fit.label()}"
        ax.plot(grid, fit.predict(grid), "--" if dashed else "-", color=color, label=label)
    else:
        ax.plot([], [], "o", color=color, label=f"{label}: no fit (one size)")


@_drawn
def loglog_train(points: pd.DataFrame, fits: pd.DataFrame, path: Path) -> Path | None:
    """Test MAE against training size per strategy and pre-training size, with the fitted lines."""
    if points.empty:
        return None
    experiments = sorted(points["experiment"].unique())
    fig, axes = _panels(len(experiments), per_row=2, height=PANEL * 1.2)
    train_fits = fits[fits["x"] == "train_size"]
    for ax, experiment in zip(axes, experiments):
        exp_points = points[points["experiment"] == experiment]
        for strategy in ordered_strategies(exp_points["strategy"].unique()):
            strat_points = exp_points[exp_points["strategy"] == strategy]
            sizes = sorted(strat_points["pretrain_size"].unique())
            colors = [strategy_color(strategy)] if len(sizes) == 1 else _shades(strategy, len(sizes))
            for color, n_pretrain in zip(colors, sizes):
                series = strat_points[strat_points["pretrain_size"] == n_pretrain].sort_values("train_size")
                found = train_fits[
                    (train_fits["experiment"] == experiment)
                    & (train_fits["strategy"] == strategy)
                    & (train_fits["pretrain_size"] == n_pretrain)
                ]
                label = strategy_label(strategy)
                if n_pretrain > 0:
                    label += f", pre-train {int(n_pretrain)}"
                fit_row = found.iloc[0] if len(found) else None
                _draw_series(ax, series["train_size"], series, fit_row, color, label, dashed=_reference_line(strategy))
        _log_axes(ax, xlabel="training set size", ylabel="test MAE", title=experiment)
        ax.legend(fontsize=6.5)
    return _save(fig, path)


@_drawn
def loglog_pretrain(points: pd.DataFrame, fits: pd.DataFrame, path: Path) -> Path | None:
    """Test MAE against pre-training size, one line per training size (transfer strategies)."""
    pre_fits = fits[fits["x"] == "pretrain_size"]
    if pre_fits.empty:
        return None
    keys = sorted(set(zip(pre_fits["experiment"], pre_fits["strategy"])))
    fig, axes = _panels(len(keys), per_row=2, height=PANEL * 1.2)
    for ax, (experiment, strategy) in zip(axes, keys):
        rows = pre_fits[(pre_fits["experiment"] == experiment) & (pre_fits["strategy"] == strategy)]
        colors = _shades(strategy, len(rows))
        for color, (_, fit_row) in zip(colors, rows.sort_values("train_size").iterrows()):
            series = points[
                (points["experiment"] == experiment)
                & (points["strategy"] == strategy)
                & (points["train_size"] == fit_row["train_size"])
            ].sort_values("pretrain_size")
            _draw_series(ax, series["pretrain_size"], series, fit_row, color, f"train {int(fit_row['train_size'])}")
        _log_axes(
            ax,
            xlabel="pre-training set size",
            ylabel="test MAE",
            title=f"{experiment} ({strategy_label(strategy)})",
        )
        ax.legend(fontsize=6.5)
    return _save(fig, path)


def _budget_panel_curves(exp_curves: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The per-line curves to draw (the scenarios chosen for a wanted ratio, all when none was chosen)
    and the plane curves of one experiment. Curves without a ``model`` column count as per-line."""
    model = exp_curves["model"] if "model" in exp_curves else pd.Series(MODEL_LINES, index=exp_curves.index)
    lines = exp_curves[model == MODEL_LINES]
    plane = exp_curves[model == MODEL_PLANE]
    chosen = lines[lines["target_ratio"].notna()] if "target_ratio" in lines else lines
    return (chosen if len(chosen) else lines), plane


@_drawn
def budget(curves: pd.DataFrame, path: Path) -> Path | None:
    """Expected MAE against total compute, per scenario along its own lines (``model`` "lines"): solid =
    extra high-fidelity, dashed = extra low-fidelity, one colour per scenario, a cross at the measured
    start (``start_mae`` when given, else the curves' start). Plane curves (``model`` "plane") are drawn
    faint in the colour of the same starting point. Only per-line scenarios with a ``target_ratio`` are
    drawn when there are any."""
    if curves.empty:
        return None
    experiments = sorted(curves["experiment"].unique())
    fig, axes = _panels(len(experiments), per_row=2, height=PANEL * 1.2)
    styles = {SPEND_HIGH: "-", SPEND_LOW: "--"}
    for ax, experiment in zip(axes, experiments):
        lines, plane = _budget_panel_curves(curves[curves["experiment"] == experiment])
        drawn = pd.concat([lines, plane])
        starts = drawn[["start_train_size", "start_pretrain_size"]].drop_duplicates()
        keys = sorted(
            (tuple(int(v) for v in k) for k in starts.itertuples(index=False)), key=lambda k: (k[1] / k[0], k)
        )
        colors = dict(zip(keys, itertools.cycle(sns.color_palette("tab10", 10))))
        for model_curves, width, alpha in ((lines, 1.8, 1.0), (plane, 1.0, 0.35)):
            for (n_train, n_pretrain, spend_on), line in model_curves.groupby(
                ["start_train_size", "start_pretrain_size", "spend_on"], sort=False
            ):
                line = line.sort_values("total_compute")
                color = colors[(int(n_train), int(n_pretrain))]
                style = styles.get(spend_on, ":")
                ax.plot(line["total_compute"], line["mae"], style, color=color, lw=width, alpha=alpha)
        for key in keys:
            at = drawn[(drawn["start_train_size"] == key[0]) & (drawn["start_pretrain_size"] == key[1])]
            start = at[at["extra_compute"] == 0].iloc[0]
            measured = start["start_mae"] if "start_mae" in at and np.isfinite(start["start_mae"]) else start["mae"]
            ax.plot(start["total_compute"], measured, "x", color=colors[key], markersize=9)
            ax.plot([], [], "-", color=colors[key], label=f"{key[1]} pre / {key[0]} train")
        ax.plot([], [], "-", color="black", label=f"more {SPEND_HIGH}")
        ax.plot([], [], "--", color="black", label=f"more {SPEND_LOW}")
        if len(plane):
            ax.plot([], [], "-", color="black", lw=1.0, alpha=0.35, label="plane fit (one slope for all sizes)")
        _log_axes(ax, xlabel="compute (low-fidelity calculation = 1)", ylabel="expected test MAE", title=experiment)
        ax.legend(fontsize=6.5)
    return _save(fig, path)


@_drawn
def intra_inter(points: pd.DataFrame, fits: pd.DataFrame, targets: list[str], path: Path) -> Path | None:
    """Per target reached from several sources: full-transfer MAE against training size per source,
    and no transfer (pooled over the experiments of that target)."""
    if not targets:
        return None
    fig, axes = _panels(len(targets), per_row=2, height=PANEL * 1.2)
    train_fits = fits[fits["x"] == "train_size"]
    for ax, target in zip(axes, targets):
        target_points = points[points["target"] == target]
        full = target_points[target_points["strategy"] == "full"]
        experiments = sorted(full["experiment"].unique())
        colors = [c for i, c in enumerate(sns.color_palette("tab10", 10)) if i != 1]  # orange is no transfer
        none = target_points[target_points["strategy"] == "none"]
        if len(none):
            pooled = none.groupby("train_size")[["mae_mean", "mae_std"]].mean().reset_index()
            ax.errorbar(
                pooled["train_size"],
                pooled["mae_mean"],
                yerr=pooled["mae_std"].fillna(0.0),
                fmt="o--",
                color=NONE_COLOR,
                capsize=3,
                label="no transfer",
            )
        for color, experiment in zip(itertools.cycle(colors), experiments):
            exp_full = full[full["experiment"] == experiment]
            n_pretrain = exp_full["pretrain_size"].max()
            series = exp_full[exp_full["pretrain_size"] == n_pretrain].sort_values("train_size")
            found = train_fits[
                (train_fits["experiment"] == experiment)
                & (train_fits["strategy"] == "full")
                & (train_fits["pretrain_size"] == n_pretrain)
            ]
            label = f"full transfer from {series['source'].iloc[0]} ({experiment})"
            _draw_series(ax, series["train_size"], series, found.iloc[0] if len(found) else None, color, label)
        _log_axes(ax, xlabel="training set size", ylabel="test MAE", title=f"target {target}")
        ax.legend(fontsize=6.5)
    return _save(fig, path)


@_drawn
def target_distributions(targets: pd.DataFrame, path: Path) -> Path | None:
    """Histograms of each property, the fidelities of one property overlaid in one panel."""
    groups = {
        base: cols for base, cols in property_groups(targets.columns).items() if targets[cols].notna().any().any()
    }
    if not groups:
        return None
    fig, axes = _panels(len(groups), per_row=2)
    for ax, (base, columns) in zip(axes, groups.items()):
        long = targets[columns].melt(var_name="fidelity", value_name="value").dropna()
        # central 99.8% only: a few extreme outliers would otherwise squash every histogram into one bin
        low, high = long["value"].quantile([0.001, 0.999])
        long = long[(long["value"] >= low) & (long["value"] <= high)]
        ax.set(title=base, xlabel=base)
        if long["value"].nunique() < 2:  # one value (or none left by the trim): no histogram to draw
            ax.text(0.5, 0.5, f"{len(long)} value(s): too few to draw", ha="center", va="center", transform=ax.transAxes)
            continue
        sns.histplot(
            data=long, x="value", hue="fidelity", stat="density", common_norm=False, element="step", bins=60, ax=ax
        )
        ax.set(title=base, xlabel=base)
    return _save(fig, path)


@_drawn
def element_counts(counts: pd.DataFrame, path: Path) -> Path | None:
    """Periodic-table heat maps: number of compounds containing each element, one per dataset."""
    if counts.empty:
        return None
    datasets = list(dict.fromkeys(counts["dataset"]))
    fig, axes = _panels(len(datasets), per_row=1, height=4.0)
    for ax, dataset in zip(axes, datasets):
        grid = np.full((10, 18), np.nan)
        labels = np.full((10, 18), "", dtype=object)
        for row in counts[counts["dataset"] == dataset].itertuples():
            r, c = periodic_position(int(row.Z))
            grid[r, c] = row.count
            labels[r, c] = f"{row.element}\n{row.count}"
        sns.heatmap(
            grid,
            ax=ax,
            annot=labels,
            fmt="",
            cmap="viridis",
            # counts span orders of magnitude (oxygen against rare earths)
            norm=matplotlib.colors.LogNorm(vmin=max(1.0, np.nanmin(grid)), vmax=max(1.0, np.nanmax(grid))),
            square=True,
            mask=np.isnan(grid),
            annot_kws={"fontsize": 5},
            cbar_kws={"label": "compounds", "format": matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")},
            xticklabels=False,
            yticklabels=False,
            linewidths=0.3,
        )
        ax.set_title(f"{dataset} ({counts.loc[counts['dataset'] == dataset, 'count'].max()} max)")
    fig.set_size_inches(11, 4.2 * len(datasets))
    return _save(fig, path)
