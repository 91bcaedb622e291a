"""The paper's findings, each stated once, checked against the runs of the tracking store.

A claim is checked on every task it applies to. Each check has a measured value with a 95 % interval
and a verdict: ``reproduced`` when the interval lies entirely on the paper's side, ``contradicted``
when it lies entirely on the other, ``inconclusive`` when it crosses the boundary or no interval
exists (one seed without per-material predictions, fewer than three sizes, nothing run). Every check
names the runs it rests on, so that a ``ConvergenceGate`` can replace its verdict by ``not converged``
when those runs had not finished learning (``convergence``). The claim's own verdict combines its
checks (``statistics.combine_verdicts``).

Claims on strategies the paper did not run itself (delta learning, multi-fidelity; from the related
work it cites) are checked against full transfer at every training size, and only when they were run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import cast

import pandas as pd

from benchmarks.manifest import property_kind
from benchmarks.report.comparisons import by_seed, fmt_interval, interval_of, paired_run_ids
from benchmarks.report.convergence import ConvergenceGate
from benchmarks.report.replicates import shares_detail
from benchmarks.report.scaling import LINEAR_SIZES, is_linear, line_runs, seed_slopes
from benchmarks.report.statistics import (
    CONTRADICTED,
    INCONCLUSIVE,
    LEVEL,
    NOT_CONVERGED,
    VERDICTS,
    Interval,
    bootstrap_mae_difference,
    combine_verdicts,
    holm_rejected,
    p_value,
    paired_difference,
    range_verdict,
    sign_verdict,
    unknown,
)
from benchmarks.report.baselines import needs_no_source_value
from benchmarks.report.tables import markdown_table, strategy_label, transfer_runs
from cgat_dgl.strategies import DELTA_KNOWN_NOTE, REGISTRY, strategy

CLAIM_COLUMNS = ("claim_id", "claim", "check", "measured", "mean", "low", "high", "n", "method", "p_value", "verdict", "detail")
RUN_IDS = "run_ids"  # a check row's runs, for the convergence gate; not a column of the table
# "Similar slopes": the paper's lines over training size differ by a few hundredths between
# pre-training sizes; the report calls slopes similar when they differ by less than this.
SIMILAR_SLOPE = 0.1
# Fig. 5: costs balance "when there are four times as many pre-training systems" at a cost ratio of 5;
# a break-even ratio within a factor of two of 4 counts as that balance.
BALANCE_RATIO = 4.0
BALANCE_RANGE = (2.0, 8.0)


@dataclass(frozen=True)
class Claim:
    claim_id: str
    text: str
    # A claim about a strategy the paper did not run: left out of the table when no run of it exists,
    # so that a report of the paper's strategies alone has the paper's claims only.
    strategy: str | None = None


CLAIMS = (
    Claim("full_beats_none", "Full transfer gives a lower test MAE than no transfer on each intra-property task."),
    Claim("full_beats_head", "Full transfer gives a lower test MAE than retraining only the regression head (intra-property)."),
    Claim("head_worse_gaps", "Retraining only the regression head is worse than no transfer for band gaps."),
    Claim("head_helps_energies", "Retraining only the regression head gives a lower MAE than no transfer for energies (intra-property)."),
    Claim("loglog_train", f"The test MAE falls linearly in log-log with the training-set size (a negative slope, and no lack of fit against the seed replicates over at least {LINEAR_SIZES} sizes)."),
    Claim("loglog_pretrain", f"The test MAE of full transfer falls linearly in log-log with the pre-training-set size (a negative slope, and no lack of fit against the seed replicates over at least {LINEAR_SIZES} sizes)."),
    Claim("similar_slopes", f"Lines over training size have similar slopes for different pre-training sizes (differ by < {SIMILAR_SLOPE:g})."),
    Claim("none_worst_all_sizes", "No transfer has a larger MAE than full transfer at every pre-training size, even a 10x smaller one."),
    Claim("inter_worse_than_intra", "Inter-property transfer gives a larger MAE than intra-property transfer to the same target."),
    Claim("inter_head_no_gain", "Inter-property: retraining only the regression head does not improve on no transfer."),
    Claim("inter_full_no_gain", "Inter-property: full transfer (at a 10x smaller learning rate) is no better than no transfer."),
    Claim("budget_balance", f"At a cost ratio of 5, extra PBE and extra high-fidelity data pay off equally near N_pretrain/N_train ≈ {BALANCE_RATIO:g} (break-even in [{BALANCE_RANGE[0]:g}, {BALANCE_RANGE[1]:g}])."),
    Claim("lr_wd_no_gain", "Inter-property: other learning rates and weight decays (the paper's grid) give no improvement over the default."),
    # Strategies of the related work the paper cites (section I), against full transfer on the same replicates.
    Claim("delta_beats_full", "Delta learning (learning target − source-model prediction from the pre-trained weights) gives a lower test MAE than full transfer, at every training size (intra-property; Smith et al. found delta learning ~1 % better than transfer for ANI).", "delta"),
    Claim("delta_known_beats_full", "Delta learning on the known source value (learning target − the material's own source value) gives a lower test MAE than full transfer, at every training size (intra-property). It needs the source (PBE) value of every material at prediction time.", "delta_known"),
    Claim("multifidelity_beats_full", "A multi-fidelity model trained jointly on source and target data gives a lower test MAE than full transfer, at every training size (intra-property; Chen et al. 2021 report this for MEGNet, Hutchinson et al. found mixed results).", "multifidelity"),
    Claim("multifidelity_ft_beats_full", "The multi-fidelity model fine-tuned on the target alone gives a lower test MAE than full transfer, at every training size (intra-property).", "multifidelity_ft"),
    # The baselines (not claims of the paper: what a transfer must beat to be worth its cost).
    Claim("full_beats_baselines", "Full transfer gives a lower test MAE than each baseline that needs no source value (the training median, the pre-trained model as is, a linear model over element fractions), on each task at its largest training size.", "constant"),
    Claim("full_beats_source_linear", "Full transfer gives a lower test MAE than a linear correction of the material's own source value, which needs the source calculation of every material predicted (intra-property, largest training size).", "source_linear"),
)
# claims on baselines, checked by _baseline_checks rather than against full transfer
BASELINE_CLAIMS = ("full_beats_baselines", "full_beats_source_linear")
CLAIM_TEXT = {c.claim_id: c.text for c in CLAIMS}


def _row(
    claim_id: str, check: str, interval: Interval, verdict: str, measured: str, detail: str = "", runs: Iterable[str] = (),
    p: float | None = None,
) -> dict[str, object]:
    """A check of a claim; ``runs``: the ids of the runs it rests on; ``p``: its two-sided p-value against
    the boundary of the paper's side (by default zero, from the interval)."""
    return {
        "claim_id": claim_id,
        "claim": CLAIM_TEXT[claim_id],
        "check": check,
        "measured": measured,
        "mean": interval.mean,
        "low": interval.low,
        "high": interval.high,
        "n": interval.n,
        "method": interval.method,
        "p_value": p_value(interval) if p is None else p,
        "verdict": verdict,
        "detail": detail,
        RUN_IDS: tuple(runs),
    }


def _nearest(interval: Interval, low: float, high: float) -> float:
    """The bound of [low, high] the interval's mean lies beyond (or nearest to)."""
    return low if abs(interval.mean - low) < abs(interval.mean - high) else high


def _of(runs: pd.DataFrame, **keys: object) -> pd.DataFrame:
    """The transfer runs with these column values."""
    transfer = transfer_runs(runs)
    for column, value in keys.items():
        transfer = transfer[transfer[column] == value]
    return transfer


def _ids(runs: pd.DataFrame) -> list[str]:
    return runs["run_id"].astype(str).tolist()


def _missing(claim_id: str, why: str) -> dict[str, object]:
    return _row(claim_id, "–", unknown(), INCONCLUSIVE, "not measured", why)


def _largest(comparisons: pd.DataFrame) -> pd.DataFrame:
    """Comparison rows on test_mae at each experiment's largest training size."""
    rows = comparisons[comparisons["metric"] == "test_mae"]
    if rows.empty:
        return rows
    largest = rows.groupby("experiment")["train_size"].transform("max")
    return rows[rows["train_size"] == largest]


def _difference_checks(
    claim_id: str,
    comparisons: pd.DataFrame,
    a: str,
    b: str,
    expected: str,
    select: Callable[[pd.Series], bool],
    every_size: bool = False,
    note: str = "",
    name_b: bool = False,
) -> list[dict[str, object]]:
    """One check per task at its largest training size (``every_size``: per task and training size);
    ``name_b``: the check names b (a claim against several strategies)."""
    rows = comparisons[comparisons["metric"] == "test_mae"] if every_size else _largest(comparisons)
    rows = rows[(rows["a"] == a) & (rows["b"] == b)]
    rows = rows[[bool(select(r)) for _, r in rows.iterrows()]] if len(rows) else rows
    # a task two experiments share (the pre-training-size study repeats the intra-property task at its
    # largest pre-training size) is one piece of evidence: each run counts once per claim
    task = ["source", "target", "train_size", "pretrain_size", "pretrain_size_b"]
    rows = rows.drop_duplicates(subset=[c for c in task if c in rows.columns], keep="first") if len(rows) else rows
    out = []
    for _, r in rows.iterrows():
        interval = interval_of(r)
        # the verdict rests on the difference's interval; the percentage (each replicate's own ratio) has its own
        measured = (f"MAE {a} − {b} = {fmt_interval(interval.mean, interval.low, interval.high)} "
                    f"({fmt_interval(r['pct'], r['pct_low'], r['pct_high'], unit=' %')} of {b})")
        detail = f"n={int(r['n'])} ({r['method']}); N train {int(r['train_size'])}, N pretrain {int(r['pretrain_size'])}"
        n_pretrain_b = r.get("pretrain_size_b", r["pretrain_size"])
        # b's own source size, where it has one (a pre-trained model, or a joint model's source pool)
        own_source = b in REGISTRY and (REGISTRY[b].from_pretrained or REGISTRY[b].multifidelity)
        if own_source and pd.notna(n_pretrain_b) and int(n_pretrain_b) != int(r["pretrain_size"]):
            detail += f" ({b}: {int(n_pretrain_b)})"
        if shares_detail(r):
            detail += f"; {shares_detail(r)}"
        if note:
            detail += f"; {note}"
        check = f"{r['experiment']}: {r['source']} → {r['target']}"
        if name_b:
            check += f", against {strategy_label(b)}"
        if every_size:
            check += f", N train {int(r['train_size'])}"
        runs = str(r.get("run_ids", "") or "").split()
        out.append(_row(claim_id, check, interval, sign_verdict(interval, expected), measured, detail, runs))
    return out or [_missing(claim_id, f"no task with both {a} and {b} runs")]


def _strategy_checks(runs: pd.DataFrame, comparisons: pd.DataFrame) -> list[dict[str, object]]:
    """The claims on the added strategies, each against full transfer at every training size; a claim
    whose strategy has no run at all is left out (``Claim.strategy``)."""
    run = set(transfer_runs(runs)["strategy"].dropna())
    rows: list[dict[str, object]] = []
    for claim in CLAIMS:
        if claim.strategy is None or claim.strategy not in run or claim.claim_id in BASELINE_CLAIMS:
            continue
        note = "needs the source value at prediction time" if strategy(claim.strategy).needs_source_value else ""
        rows += _difference_checks(claim.claim_id, comparisons, claim.strategy, "full", "negative", _is_intra, every_size=True, note=note)
    return rows


def _baseline_checks(runs: pd.DataFrame, comparisons: pd.DataFrame) -> list[dict[str, object]]:
    """Full transfer against each baseline that ran: those that need no source value in one claim, the
    linear correction of the source value in another (it uses a calculation transfer does without)."""
    run = set(transfer_runs(runs)["strategy"].dropna())
    rows: list[dict[str, object]] = []
    for name in needs_no_source_value():
        if name in run:
            rows += _difference_checks("full_beats_baselines", comparisons, "full", name, "negative", lambda r: True, name_b=True)
    if "source_linear" in run:
        note = "source_linear needs the source value at prediction time"
        rows += _difference_checks("full_beats_source_linear", comparisons, "full", "source_linear", "negative", _is_intra, note=note)
    return rows


def _is_intra(r: pd.Series) -> bool:
    return r["task_type"] == "intra"


def _slope_checks(
    claim_id: str, runs: pd.DataFrame, fits: pd.DataFrame, x: str, strategies: tuple[str, ...]
) -> list[dict[str, object]]:
    """"Falls linearly in log-log": a negative slope over seeds and no lack of fit against the seed
    replicates, on at least ``LINEAR_SIZES`` sizes; fewer sizes leave it inconclusive whatever the
    slope. A line that two experiments share (the same task, strategy and fixed size) counts once."""
    chosen = fits[(fits["x"] == x) & fits["strategy"].isin(strategies)]
    tasks = transfer_runs(runs).groupby("experiment")[["source", "target"]].first()
    out, seen = [], set()
    for r in chosen.itertuples():
        if not math.isfinite(r.slope):
            continue
        fixed_size = r.pretrain_size if x == "train_size" else r.train_size
        task = tuple(tasks.loc[r.experiment]) if r.experiment in tasks.index else (r.experiment,)
        if (r.strategy, task, fixed_size) in seen:
            continue
        seen.add((r.strategy, task, fixed_size))
        at = f"pre-training {int(r.pretrain_size)}" if x == "train_size" else f"training {int(r.train_size)}"
        interval = Interval(float(r.slope), float(r.slope_low), float(r.slope_high), int(r.n_seed_fits), "t over seeds" if r.n_seed_fits >= 2 else "")
        # the line's runs: every size along x at the fixed other size
        fixed = {"pretrain_size": r.pretrain_size} if x == "train_size" else {"train_size": r.train_size}
        line = line_runs(runs, x, {"experiment": r.experiment, "strategy": r.strategy, **fixed})
        # the lack-of-fit test of the line is fit_table's (scaling.LINEAR_SIZES, lack_of_fit_p)
        lof_p = float(r.lack_of_fit_p)
        curved = math.isfinite(lof_p) and lof_p < 1.0 - LEVEL
        measured = f"slope {fmt_interval(interval.mean, interval.low, interval.high)}"
        slope_alone = sign_verdict(interval, "negative")
        lof = f"lack of fit p = {lof_p:.2g}" if math.isfinite(lof_p) else "no lack-of-fit test"
        detail = f"{int(r.n_points)} sizes, {len(line)} runs; {lof}"
        if math.isfinite(r.slope_se):
            detail += f"; fit SE {r.slope_se:.3g}"
        if r.n_points < LINEAR_SIZES:
            verdict = INCONCLUSIVE
            detail = f"linearity needs at least {LINEAR_SIZES} sizes (the slope alone: {slope_alone}); {detail}"
        elif curved:
            verdict = CONTRADICTED  # the replicates put the size means off any straight line
            detail = f"curved: the size means depart from the line beyond the seed scatter (the slope alone: {slope_alone}); {detail}"
        else:
            verdict = slope_alone
        out.append(_row(claim_id, f"{r.experiment}, {r.strategy}, {at}", interval, verdict, measured, detail, _ids(line),
                        p=lof_p if curved else None))  # fmt: skip
    return out or [_missing(claim_id, f"no fit over {x.replace('_', ' ')} with two or more sizes")]


def _similar_slopes(runs: pd.DataFrame, fits: pd.DataFrame) -> list[dict[str, object]]:
    lines = fits[(fits["x"] == "train_size") & (fits["strategy"] == "full") & fits["slope"].notna()]
    out = []
    for experiment, group in lines.groupby("experiment"):
        if group["pretrain_size"].nunique() < 2:
            continue
        small, large = int(group["pretrain_size"].min()), int(group["pretrain_size"].max())
        keys = {"experiment": experiment, "strategy": "full"}
        by_seed_small = seed_slopes(runs, "train_size", {**keys, "pretrain_size": small})
        by_seed_large = seed_slopes(runs, "train_size", {**keys, "pretrain_size": large})
        interval = paired_difference(by_seed_large, by_seed_small)
        verdict = range_verdict(interval, -SIMILAR_SLOPE, SIMILAR_SLOPE)
        p = p_value(interval, _nearest(interval, -SIMILAR_SLOPE, SIMILAR_SLOPE))
        measured = f"slope at {large} − slope at {small} = {fmt_interval(interval.mean, interval.low, interval.high)}"
        lines = _of(runs, experiment=experiment, strategy="full")
        lines = lines[lines["pretrain_size"].isin([small, large]) & lines["seed"].isin(set(by_seed_small) & set(by_seed_large))]
        out.append(_row("similar_slopes", f"{experiment}, full", interval, verdict, measured, f"n={interval.n} seeds", _ids(lines), p))
    return out or [_missing("similar_slopes", "no experiment has full-transfer lines at two pre-training sizes")]


def _none_worst(runs: pd.DataFrame) -> list[dict[str, object]]:
    transfer = transfer_runs(runs)
    full = transfer[transfer["strategy"] == "full"]
    out = []
    for experiment, exp_full in full.groupby("experiment"):
        if exp_full["pretrain_size"].nunique() < 2:
            continue
        target, profile = exp_full["target"].iloc[0], exp_full["profile"].iloc[0]
        none = transfer[(transfer["strategy"] == "none") & (transfer["target"] == target) & (transfer["profile"] == profile)]
        smallest = int(exp_full["pretrain_size"].min())
        for train_size, at_size in exp_full[exp_full["pretrain_size"] == smallest].groupby("train_size"):
            base = none[none["train_size"] == train_size]
            if base.empty:
                continue
            interval = paired_difference(by_seed(at_size), by_seed(base))
            measured = f"MAE full − none = {fmt_interval(interval.mean, interval.low, interval.high)}"
            check = f"{experiment}: smallest pre-training {smallest}, training {int(train_size)}"
            verdict = sign_verdict(interval, "negative")
            runs_used = paired_run_ids(at_size, base)
            out.append(_row("none_worst_all_sizes", check, interval, verdict, measured, f"n={interval.n} seeds", runs_used))
    return out or [_missing("none_worst_all_sizes", "no full-transfer runs at several pre-training sizes with a no-transfer baseline")]


def _inter_vs_intra(runs: pd.DataFrame) -> list[dict[str, object]]:
    transfer = transfer_runs(runs)
    full = transfer[transfer["strategy"] == "full"]
    out = []
    for (target, profile), group in full.groupby(["target", "profile"]):
        intra, inter = group[group["task_type"] == "intra"], group[group["task_type"] == "inter"]
        if intra.empty or inter.empty:
            continue
        # per experiment: one source may be transferred twice (target normalisation refitted and kept)
        for (experiment, source), inter_src in inter.groupby(["experiment", "source"]):
            common = sorted(set(intra["train_size"]) & set(inter_src["train_size"]))
            if not common:
                continue
            n_train = common[-1]
            a = inter_src[(inter_src["train_size"] == n_train)]
            b = intra[(intra["train_size"] == n_train)]
            a = a[a["pretrain_size"] == a["pretrain_size"].max()]
            b = b[b["pretrain_size"] == b["pretrain_size"].max()]
            # an intra experiment may appear twice (e.g. a pre-training-size study): one value per seed
            interval = paired_difference(by_seed(a), by_seed(b))
            measured = f"MAE inter − intra = {fmt_interval(interval.mean, interval.low, interval.high)}"
            detail = f"n={interval.n} seeds; N train {int(n_train)}; intra source {', '.join(sorted(set(b['source'])))}"
            verdict = sign_verdict(interval, "positive")
            out.append(_row("inter_worse_than_intra", f"{experiment}: {source} → {target}", interval, verdict, measured, detail, paired_run_ids(a, b)))
    return out or [_missing("inter_worse_than_intra", "no target is reached by full transfer from both an intra- and an inter-property source")]


def _budget(budget: pd.DataFrame | None, runs: pd.DataFrame, fits: pd.DataFrame) -> list[dict[str, object]]:
    if budget is None or budget.empty:
        return [_missing("budget_balance", "no scenario has both a training-size and a pre-training-size line")]
    out = []
    for r in budget.itertuples():
        # the interval surrounds the seeds' geometric mean ratio, so that is its centre
        interval = Interval(float(r.break_even_seed_mean), float(r.break_even_low), float(r.break_even_high), int(r.n_seeds), "t over seeds (log ratio)")
        measured = f"break-even N_pretrain/N_train = {fmt_interval(interval.mean, interval.low, interval.high)}"
        check = f"{r.experiment}: start {int(r.pretrain_size)} pre / {int(r.train_size)} train"
        detail = f"n={int(r.n_seeds)} seeds; ratio from the mean lines {r.break_even:.3g}; better first step: {r.better_first_step}"
        if int(getattr(r, "n_seeds_no_ratio", 0) or 0):
            detail += f"; {int(r.n_seeds_no_ratio)} seed(s) without a ratio (a slope not negative)"
        # the scenario's two lines: full transfer over training size at its pre-training size, and over
        # pre-training size at its training size
        full = _of(runs, experiment=r.experiment, strategy="full")
        lines = full[(full["pretrain_size"] == r.pretrain_size) | (full["train_size"] == r.train_size)]
        # the interval is a t-interval of the mean log ratio: its p-value is taken on the log scale
        logs = Interval(*(math.log(v) if v > 0 else math.nan for v in (interval.mean, interval.low, interval.high)), interval.n, "t over seeds")
        p = p_value(logs, _nearest(logs, *(math.log(b) for b in BALANCE_RANGE)))
        verdict = range_verdict(interval, *BALANCE_RANGE)
        linear = is_linear(fits, r.experiment, "train_size", "pretrain_size", int(r.pretrain_size), "full") and is_linear(
            fits, r.experiment, "pretrain_size", "train_size", int(r.train_size), "full"
        )
        if not linear:  # a break-even read off lines that are not straight says nothing about the lines
            detail = f"a line fails the linearity test ({LINEAR_SIZES}+ sizes, no lack of fit; the interval alone: {verdict}); {detail}"
            verdict = INCONCLUSIVE
        out.append(_row("budget_balance", check, interval, verdict, measured, detail, _ids(lines), p))
    return out


def _trial_interval(best: pd.Series, other_id: str, other_mae: float, errors: Mapping[str, pd.Series] | None) -> Interval:
    """Test MAE of the best trial minus that of another run: a bootstrap over their common test
    materials where both logged predictions, else the bare difference (no interval)."""
    if errors is not None and best["run_id"] in errors and other_id in errors:
        ea, eb = errors[best["run_id"]].align(errors[other_id], join="inner")
        return bootstrap_mae_difference(ea.to_numpy(), eb.to_numpy())
    return unknown(float(best["test_mae"]) - other_mae, 1)


def _capped(trials: pd.DataFrame) -> int:
    return int((trials["stop_reason"] != "plateau").sum()) if "stop_reason" in trials else len(trials)


def _study(studies: pd.DataFrame | None, errors: Mapping[str, pd.Series] | None, runs: pd.DataFrame) -> list[dict[str, object]]:
    """The best trial (by its objective, the validation MAE) of each inter-property study of a transfer
    strategy, against the manifest's own run of that task and strategy (``lr_wd_no_gain``); and, where
    no transfer got the same search, the best full-transfer trial against the best no-transfer trial
    (``inter_full_no_gain``, tuned)."""
    if studies is None or studies.empty:
        return [_missing("lr_wd_no_gain", "no finished study trials in the store (run `cgat-bench tune --study ...`)")]
    out = []
    transfer = transfer_runs(runs)
    bests: dict[tuple[str, str], tuple[str, pd.Series, pd.DataFrame]] = {}
    for study, trials in studies.groupby("study"):
        trials = trials.dropna(subset=["objective", "test_mae"])
        if trials.empty or trials["task_type"].iloc[0] != "inter":
            continue
        best = trials.loc[trials["objective"].idxmin()]
        bests[(str(best["experiment"]), str(best["strategy"]))] = (str(study), best, trials)
        if strategy(str(best["strategy"])).target_only:
            continue  # no transfer: judged against the transfers below, not against its own default
        default = transfer[
            (transfer["experiment"] == best["experiment"])
            & (transfer["strategy"] == best["strategy"])
            & (transfer["train_size"] == best["train_size"])
            & (transfer["seed"] == best["seed"])
        ]
        check = f"{study}: best of {len(trials)} trials (lr {best['lr']:.3g}, wd {best['weight_decay']:.3g})"
        if default.empty:
            out.append(_row("lr_wd_no_gain", check, unknown(), INCONCLUSIVE, "no default run", "the manifest's run of this task is missing"))
            continue
        run_default = str(default.iloc[0]["run_id"])
        default_mae = float(default.iloc[0]["test_mae"])
        others = trials[trials["test_mae"].astype(float) != default_mae]
        if float(best["test_mae"]) == default_mae and len(others):
            # the search's best trains the default model bitwise (the grid holds the default): the claim is
            # about the other settings, so the best of those is measured against the default
            best = others.loc[others["objective"].idxmin()]
            check = (f"{study}: the best of {len(trials)} trials is the default; the best other "
                     f"(lr {best['lr']:.3g}, wd {best['weight_decay']:.3g})")
        interval = _trial_interval(best, run_default, default_mae, errors)
        measured = f"MAE best trial − default = {fmt_interval(interval.mean, interval.low, interval.high)}"
        verdict = sign_verdict(interval, "positive")
        detail = interval.method or "one seed, no predictions"
        # trials are not runs of the runs frame: the gate sees the default run, the trials are judged here
        capped = _capped(trials)
        if capped:
            detail = f"{capped} of {len(trials)} trials did not stop on a validation plateau (the interval alone: {verdict}); {detail}"
            verdict = NOT_CONVERGED
        out.append(_row("lr_wd_no_gain", check, interval, verdict, measured, detail, [run_default]))
    for (experiment, name), (study, best, trials) in bests.items():
        if name != "full" or (experiment, "none") not in bests:
            continue
        none_study, none_best, none_trials = bests[(experiment, "none")]
        interval = _trial_interval(best, str(none_best["run_id"]), float(none_best["test_mae"]), errors)
        check = f"{experiment}, tuned: best of {len(trials)} full-transfer trials against best of {len(none_trials)} no-transfer trials"
        measured = f"MAE full − none = {fmt_interval(interval.mean, interval.low, interval.high)}"
        verdict = sign_verdict(interval, "positive")
        detail = (f"{study}: lr {best['lr']:.3g}, wd {best['weight_decay']:.3g}; {none_study}: lr {none_best['lr']:.3g}, "
                  f"wd {none_best['weight_decay']:.3g}; {interval.method or 'one seed, no predictions'}")  # fmt: skip
        capped = _capped(trials) + _capped(none_trials)
        if capped:
            detail = f"{capped} trials did not stop on a validation plateau (the interval alone: {verdict}); {detail}"
            verdict = NOT_CONVERGED
        out.append(_row("inter_full_no_gain", check, interval, verdict, measured, detail))
    return out or [_missing("lr_wd_no_gain", "no finished study of an inter-property task")]


def claims_table(
    runs: pd.DataFrame,
    comparisons: pd.DataFrame,
    fits: pd.DataFrame,
    budget: pd.DataFrame | None = None,
    studies: pd.DataFrame | None = None,
    errors: Mapping[str, pd.Series] | None = None,
    gate: ConvergenceGate | None = None,
) -> pd.DataFrame:
    """One row per check of every claim in ``CLAIMS``, in that order. With ``gate``, a check whose runs
    had not finished learning gets verdict ``not converged`` (``ConvergenceGate.apply``)."""
    gap = lambda r: _is_intra(r) and property_kind(r["target"]) == "gap"  # noqa: E731
    energy = lambda r: _is_intra(r) and property_kind(r["target"]) != "gap"  # noqa: E731
    inter = lambda r: r["task_type"] == "inter"  # noqa: E731
    rows: list[dict[str, object]] = []
    rows += _difference_checks("full_beats_none", comparisons, "full", "none", "negative", _is_intra)
    rows += _difference_checks("full_beats_head", comparisons, "full", "head", "negative", _is_intra)
    rows += _difference_checks("head_worse_gaps", comparisons, "head", "none", "positive", gap)
    rows += _difference_checks("head_helps_energies", comparisons, "head", "none", "negative", energy)
    rows += _slope_checks("loglog_train", runs, fits, "train_size", ("none", "head", "full"))
    rows += _slope_checks("loglog_pretrain", runs, fits, "pretrain_size", ("full",))
    rows += _similar_slopes(runs, fits)
    rows += _none_worst(runs)
    rows += _inter_vs_intra(runs)
    rows += _difference_checks("inter_head_no_gain", comparisons, "head", "none", "positive", inter)
    rows += _difference_checks("inter_full_no_gain", comparisons, "full", "none", "positive", inter)
    rows += _budget(budget, runs, fits)
    rows += _study(studies, errors, runs)
    rows += _strategy_checks(runs, comparisons)
    rows += _baseline_checks(runs, comparisons)
    rows = [_enough_evidence(row) for row in rows]
    if gate is not None:
        rows = [gate.apply(row, runs, cast(tuple[str, ...], row[RUN_IDS])) for row in rows]
    order = {claim.claim_id: i for i, claim in enumerate(CLAIMS)}
    rows.sort(key=lambda row: order[str(row["claim_id"])])  # stable: each claim's checks keep their order
    return pd.DataFrame(holm(rows), columns=list(CLAIM_COLUMNS))


# A verdict needs replicates or a test set that can speak for new materials: one seed scored on fewer
# test materials than this leaves a check inconclusive, whatever its interval (a bootstrap over three
# materials is narrow because three materials cannot show their own spread).
MIN_TEST_MATERIALS = 30
ONE_SEED_BOOTSTRAP = "bootstrap over materials"


def _enough_evidence(row: dict[str, object]) -> dict[str, object]:
    """The row, ``inconclusive`` with the reason first in its detail when it rests on one seed and
    fewer than ``MIN_TEST_MATERIALS`` test materials."""
    n = int(cast(int, row["n"]))
    if row["method"] != ONE_SEED_BOOTSTRAP or n >= MIN_TEST_MATERIALS or row["verdict"] == INCONCLUSIVE:
        return row
    reason = (f"too little evidence: one seed and {n} test materials (a verdict needs 2 seeds or "
              f"{MIN_TEST_MATERIALS} test materials; the interval alone: {row['verdict']})")
    return {**row, "verdict": INCONCLUSIVE, "detail": reason + ("; " + str(row["detail"]) if row["detail"] else "")}


def holm(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    """A claim is contradicted if any of its checks is, so its contradictions are corrected for
    multiplicity: Holm's procedure over the claim's family (every check with a p-value) keeps a check
    ``contradicted`` only if its p-value is rejected at the family-wise 5 %; otherwise it becomes
    ``inconclusive`` and its detail says why."""
    out = list(rows)
    for claim_id in dict.fromkeys(str(row["claim_id"]) for row in rows):
        members = [i for i, row in enumerate(rows) if row["claim_id"] == claim_id]
        p_values = [float(cast(float, rows[i]["p_value"])) for i in members]
        family = sum(math.isfinite(p) for p in p_values)
        for i, p, rejected in zip(members, p_values, holm_rejected(p_values)):
            if rows[i]["verdict"] == CONTRADICTED and math.isfinite(p) and not rejected:
                note = f"contradicted at 95 % alone, not after Holm's correction over the claim's {family} checks (p = {p:.2g})"
                detail = f"{note}; {rows[i]['detail']}" if rows[i].get("detail") else note
                out[i] = {**rows[i], "verdict": INCONCLUSIVE, "detail": detail}
    return out


def _count_column(verdict: str) -> str:
    return verdict.replace(" ", "_")  # "not converged" -> not_converged: a column and metric name


def claim_verdicts(table: pd.DataFrame) -> pd.DataFrame:
    """One row per claim: its combined verdict and how many checks gave each verdict (columns
    reproduced, contradicted, not_converged, inconclusive)."""
    rows = []
    for claim in CLAIMS:
        checks = table[table["claim_id"] == claim.claim_id]
        if claim.strategy is not None and checks.empty:
            continue  # its strategy was not run: no claim, rather than an inconclusive one
        verdicts = checks["verdict"].tolist()
        counts = {_count_column(v): verdicts.count(v) for v in VERDICTS}
        family = int(pd.to_numeric(checks["p_value"], errors="coerce").notna().sum()) if "p_value" in checks else 0
        rows.append({"claim_id": claim.claim_id, "claim": claim.text, "verdict": combine_verdicts(verdicts), "checks": len(verdicts),
                     "family": family, **counts})  # fmt: skip
    return pd.DataFrame(rows)


def claims_markdown(table: pd.DataFrame) -> str:
    """Each claim once with its combined verdict, then its checks."""
    summary = claim_verdicts(table)
    blocks = [
        markdown_table(
            ["claim", "verdict", "checks (reproduced / contradicted / not converged / inconclusive)", "Holm family"],
            [
                [r.claim, f"**{r.verdict}**", f"{r.checks} ({r.reproduced} / {r.contradicted} / {r.not_converged} / {r.inconclusive})",
                 f"{r.family} checks"]
                for r in summary.itertuples()
            ],
        )
    ]
    detail_rows = [
        [r.claim_id, r.check, r.measured, r.verdict, r.detail]
        for r in table.itertuples()
    ]
    blocks.append(markdown_table(["claim", "check", "measured (95 % interval)", "verdict", "detail"], detail_rows))
    if (table["claim_id"] == "delta_known_beats_full").any():
        blocks.append(f"Note on delta_known_beats_full: {DELTA_KNOWN_NOTE}.\n")
    return "\n".join(blocks)


def verdict_counts(table: pd.DataFrame) -> dict[str, int]:
    """How many claims got each verdict, keyed reproduced, contradicted, not_converged, inconclusive."""
    summary = claim_verdicts(table)
    return {_count_column(v): int((summary["verdict"] == v).sum()) for v in VERDICTS}
