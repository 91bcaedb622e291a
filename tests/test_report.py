"""Reading runs back from an MLflow store, and the full report on a synthetic runs frame."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from benchmarks.manifest import Manifest
from benchmarks.report import collect_runs, write_report
from benchmarks.report.statistics import NOT_CONVERGED

SUBSET = "test_mae_gap_above_0.1"


# --- collect_runs ---------------------------------------------------------------------------------


SCORES = {"test_mae": 0.5, "test_rmse": 0.6, "test_r2": 0.6, "best_val_mae": 0.49}
# (epoch, train_mae, val_mae, lr), logged out of order on purpose
HISTORY = [(2, 0.5, 0.6, 1e-4), (0, 0.9, 1.0, 1e-5), (1, 0.7, 0.8, 5e-5)]


def _tags(kind: str, strategy: str, profile: str = "smoke", **extra: str) -> dict[str, str]:
    return {
        "cgat.kind": kind,
        "cgat.experiment": "pretrain" if kind == "pretrain" else "gap_hse",
        "cgat.profile": profile,
        "cgat.run_key": f"{kind}-{strategy}",
        "cgat.strategy": strategy,
        "cgat.source": "gap_pbe",
        "cgat.target": "gap_pbe" if kind == "pretrain" else "gap_hse",
        "cgat.task_type": "pretrain" if kind == "pretrain" else "intra",
        "cgat.seed": "3",
        **extra,
    }


def _child(
    client: MlflowClient,
    experiment_id: str,
    parent_id: str,
    tags: dict[str, str],
    sizes: tuple[int, int],
    metrics: dict[str, float],
    history: list[tuple[int, float, float, float]] | None = None,
    status: str = "FINISHED",
) -> str:
    run_id = client.create_run(experiment_id, tags={"mlflow.parentRunId": parent_id, **tags}).info.run_id
    client.log_param(run_id, "train_size", str(sizes[0]))
    client.log_param(run_id, "pretrain_size", str(sizes[1]))
    stamp = 1_700_000_000_000
    batch = [Metric(name, value, stamp, 0) for name, value in metrics.items()]
    for epoch, *values in history or []:
        batch += [Metric(name, v, stamp, epoch) for name, v in zip(("train_mae", "val_mae", "lr"), values)]
    client.log_batch(run_id, metrics=batch)
    client.set_terminated(run_id, status=status)
    return run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, str]]:
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("cgat-bench")
    parent_tags = {"cgat.parent": "1", "cgat.experiment": "gap_hse", "cgat.profile": "smoke"}
    parent = client.create_run(exp, tags=parent_tags).info.run_id
    client.set_terminated(parent)
    stopped = {"cgat.pretrain_run_id": "x", "cgat.stop_reason": "plateau", "cgat.converged": "true"}
    linked = _tags("transfer", "full", **stopped)
    full_scores = {"test_mae": 0.4, "test_rmse": 0.5, "test_r2": 0.7, "best_val_mae": 0.38, SUBSET: 0.6,
                   "best_epoch": 1.0, "epochs_run": 3.0}  # fmt: skip
    ids = {
        "pretrain": _child(client, exp, parent, _tags("pretrain", "pretrain"), (800, 0), {**SCORES, "trained_structures": 2400.0}, HISTORY),
        "full": _child(client, exp, parent, linked, (120, 800), full_scores, HISTORY),
        "none": _child(client, exp, parent, _tags("transfer", "none"), (120, 0), SCORES),
        "failed": _child(client, exp, parent, _tags("transfer", "head"), (120, 800), SCORES, status="FAILED"),
        "trial": _child(client, exp, parent, _tags("transfer", "full", **{"cgat.study": "hpo"}), (120, 800), SCORES),
        "cpu": _child(client, exp, parent, _tags("transfer", "none", profile="cpu"), (500, 0), SCORES),
    }
    return uri, ids


@pytest.mark.slow  # creating the SQLite store takes several seconds
def test_collect_runs_reads_finished_children_only(store: tuple[str, dict[str, str]]) -> None:
    uri, ids = store
    runs, histories = collect_runs(uri)
    assert set(runs["run_id"]) == {ids["pretrain"], ids["full"], ids["none"], ids["cpu"]}
    full = runs.set_index("run_id").loc[ids["full"]]
    assert full["kind"] == "transfer" and full["strategy"] == "full" and full["target"] == "gap_hse"
    assert full["train_size"] == 120 and full["pretrain_size"] == 800 and full["seed"] == 3
    assert full["test_mae"] == pytest.approx(0.4) and full["best_val_mae"] == pytest.approx(0.38)
    assert full[SUBSET] == pytest.approx(0.6) and full["pretrain_run_id"] == "x"
    assert math.isnan(runs.set_index("run_id").loc[ids["none"], SUBSET])
    # how each run stopped; nothing for runs from before early stopping
    assert (full["best_epoch"], full["epochs_run"], full["stop_reason"], full["converged"]) == (1, 3, "plateau", True)
    old = runs.set_index("run_id").loc[ids["none"]]
    assert math.isnan(old["best_epoch"]) and math.isnan(old["epochs_run"])
    assert old["stop_reason"] is None and old["converged"] is None
    # a pre-training's total structures are its own (a shipped model's run may not have logged the total)
    assert runs.set_index("run_id").loc[ids["pretrain"], "total_trained_structures"] == 2400.0
    assert math.isnan(full["total_trained_structures"])
    history = histories[ids["full"]]
    assert list(history.columns) == ["epoch", "train_mae", "val_mae", "lr"]
    assert history["epoch"].tolist() == [0, 1, 2]
    assert history["val_mae"].tolist() == pytest.approx([1.0, 0.8, 0.6])
    assert histories[ids["none"]].empty


@pytest.mark.slow
def test_collect_runs_filters_by_profile(store: tuple[str, dict[str, str]]) -> None:
    uri, ids = store
    runs, histories = collect_runs(uri, profile="cpu")
    assert runs["run_id"].tolist() == [ids["cpu"]]
    assert set(histories) == {ids["cpu"]}


@pytest.mark.slow
def test_collect_runs_names_what_is_wrong(store: tuple[str, dict[str, str]]) -> None:
    uri, _ = store
    with pytest.raises(ValueError, match="no MLflow experiment named 'missing'"):
        collect_runs(uri, experiment_name="missing")
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment("broken")
    run = client.create_run(experiment_id, tags=_tags("transfer", "none"))
    client.log_param(run.info.run_id, "train_size", "many")
    client.set_terminated(run.info.run_id)
    with pytest.raises(ValueError, match=f"run {run.info.run_id}: param 'train_size'"):
        collect_runs(uri, experiment_name="broken")


# --- write_report ---------------------------------------------------------------------------------

TRAIN_SIZES = (100, 300, 600, 1000)  # four sizes: what the linearity test needs
SEEDS = (0, 1)
EXPERIMENTS = {
    # name: (source, target, task type, strategies, pre-training sizes for full transfer, training sizes)
    "gap_intra": ("gap_pbe", "gap_hse", "intra", ("none", "head", "full"), (1000, 4000), TRAIN_SIZES),
    "gap_inter": ("e_form_pbe", "gap_hse", "inter", ("none", "full"), (4000,), TRAIN_SIZES),
    "eform_expt": ("e_form_pbe", "e_form_expt", "intra", ("none", "full"), (4000,), (500,)),
}


def _mae(strategy: str, n_train: int, n_pretrain: int, seed: int, inter: bool) -> float:
    noise = 1.0 + 0.03 * (seed - 0.5)
    if strategy == "none":
        return 2.2 * n_train**-0.3 * noise
    if strategy == "head":
        return 1.8 * n_train**-0.28 * noise
    return (1.3 if not inter else 1.7) * n_train**-0.22 * (n_pretrain / 1000) ** -0.1 * noise


def _run(mae: float, subset: float, **fields: object) -> dict[str, object]:
    scores = {"test_mae": mae, "test_rmse": 1.3 * mae, "test_r2": 0.8, "best_val_mae": 1.05 * mae, SUBSET: subset}
    stopped = {"best_epoch": 8, "epochs_run": 12, "stop_reason": "plateau", "converged": True}
    return {"profile": "smoke", **stopped, **fields, **scores}


# The run that hit its epoch cap: one point of one line (head over training size), in no comparison at
# the largest training size.
CAPPED = "gap_intra-head-4000-100-0"
# Targets of the pre-trained models: the 4000-structure gap_pbe model (MAE 0.066) meets 1.5 x 0.05,
# the e_form_pbe one misses 1.5 x 0.03.
PRETRAIN_TARGETS = {"gap_pbe": 0.05, "e_form_pbe": 0.03}


def _manifest(pipeline_check: bool = False) -> dict[str, object]:
    stage = {"epochs": 12}
    return {
        "profiles": {"smoke": {"model": "smoke", "pretrain": stage, "transfer": stage, "pipeline_check": pipeline_check}},
        "pretrain_targets": PRETRAIN_TARGETS,
        "experiments": [{"name": name, "source": source, "target": target} for name, (source, target, *_) in EXPERIMENTS.items()],
    }


def _curve(final: float) -> pd.DataFrame:
    epochs = np.arange(12)
    val = final * (1 + 2.0 * np.exp(-epochs / 3))
    return pd.DataFrame({"epoch": epochs, "train_mae": 0.9 * val, "val_mae": val, "lr": 1e-4})


def _synthetic() -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    rows, histories, pretrain_ids = [], {}, {}
    for source, sizes in (("gap_pbe", (1000, 4000)), ("e_form_pbe", (4000,))):
        for n in sizes:
            run_id = pretrain_ids[(source, n)] = f"pre-{source}-{n}"
            histories[run_id] = _curve(0.1 * (n / 1000) ** -0.3)
            rows.append(
                _run(
                    0.1 * (n / 1000) ** -0.3,
                    0.15 if source == "gap_pbe" else math.nan,
                    run_id=run_id,
                    kind="pretrain",
                    experiment="pretrain",
                    strategy="pretrain",
                    source=source,
                    target=source,
                    task_type="pretrain",
                    seed=0,
                    train_size=n,
                    pretrain_size=0,
                    pretrain_run_id=None,
                )
            )
    for experiment, (source, target, task, strategies, pretrain_sizes, train_sizes) in EXPERIMENTS.items():
        for strategy in strategies:
            starts = {"none": (0,), "head": pretrain_sizes[-1:], "full": pretrain_sizes}[strategy]
            for n_pretrain, n_train, seed in itertools.product(starts, train_sizes, SEEDS):
                run_id = f"{experiment}-{strategy}-{n_pretrain}-{n_train}-{seed}"
                mae = _mae(strategy, n_train, n_pretrain, seed, task == "inter")
                rows.append(
                    _run(
                        mae,
                        1.5 * mae if target == "gap_hse" else math.nan,
                        run_id=run_id,
                        kind="transfer",
                        experiment=experiment,
                        strategy=strategy,
                        source=source,
                        target=target,
                        task_type=task,
                        seed=seed,
                        train_size=n_train,
                        pretrain_size=n_pretrain,
                        pretrain_run_id=pretrain_ids.get((source, n_pretrain)),
                        **({"stop_reason": "cap", "converged": False, "best_epoch": 11} if run_id == CAPPED else {}),
                    )
                )
                histories[run_id] = _curve(mae)
    return pd.DataFrame(rows), histories


def _targets_and_elements() -> tuple[pd.DataFrame, dict[str, list[str]]]:
    rng = np.random.default_rng(0)
    ids = [f"mp-{i}" for i in range(300)]
    targets = pd.DataFrame(
        {
            "gap_pbe": np.clip(rng.normal(0.5, 1.0, 300), 0, None),
            "gap_hse": np.where(np.arange(300) < 100, np.clip(rng.normal(1.0, 1.2, 300), 0, None), np.nan),
            "e_form_pbe": rng.normal(-1.5, 0.8, 300),
            "e_form_expt": np.where(np.arange(300) >= 250, rng.normal(-1.6, 0.8, 300), np.nan),
        },
        index=ids,
    )
    pool = ["O", "Li", "Fe", "N", "Si", "La", "U", "H"]
    elements = {i: list(rng.choice(pool, size=3, replace=True)) for i in ids}
    return targets, elements


Report = tuple[Path, pd.DataFrame, dict[str, list[str]], pd.DataFrame]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Report:
    runs, histories = _synthetic()
    targets, elements = _targets_and_elements()
    out = tmp_path_factory.mktemp("report")
    manifest = Manifest.model_validate(_manifest())
    path = write_report(runs, histories, out, targets=targets, elements=elements, cost_ratio=5.0, manifest=manifest)
    return path, runs, elements, targets


EXPECTED_FILES = (
    "report.md", "table1.csv", "table1.md", "fits.csv", "extrapolations.csv", "budget.csv", "budget_fit.csv",
    "intra_inter.csv", "target_stats.csv", "element_counts.csv", "runs.csv", "pretrain_models.csv",
    "learning_curves.png", "pretrain_curves.png", "loglog_train_size.png", "loglog_pretrain_size.png", "budget.png", "intra_inter.png",
    "target_distributions.png", "element_counts.png", "published.csv",
)


@pytest.mark.slow
def test_every_table_and_figure_is_written(report: Report) -> None:
    path, *_ = report
    out = path.parent
    for name in EXPECTED_FILES:
        assert (out / name).stat().st_size > 0, name
        if name.endswith(".png"):
            assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = path.read_text()
    for name in EXPECTED_FILES[1:]:
        assert f"({name})" in text, f"report.md does not link {name}"
    # eform_expt has a single training size: said plainly, not dropped
    assert "eform_expt, none, pre-training 0): only one train size: no fit" in text
    assert "eform_expt: budget analysis skipped" in text


def test_a_property_with_one_value_and_a_figure_that_fails_still_give_the_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from benchmarks.report import figures

    runs, histories = _synthetic()
    targets, elements = _targets_and_elements()
    sparse = targets.copy()
    sparse.loc[:, "gap_hse"] = np.nan
    sparse.iloc[0, sparse.columns.get_loc("gap_hse")] = 1.0  # a single value of a property
    assert figures.target_distributions(sparse, tmp_path / "one.png") == tmp_path / "one.png"

    def broken(*args: object, **kwargs: object) -> None:
        raise TypeError("'NoneType' object is not iterable")

    monkeypatch.setattr(figures, "budget", figures._drawn(broken))
    manifest = Manifest.model_validate(_manifest())
    path = write_report(runs, histories, tmp_path / "out", targets=sparse, elements=elements, cost_ratio=5.0,
                        manifest=manifest)
    text = path.read_text()
    assert "not drawn: TypeError: 'NoneType' object is not iterable" in text
    assert (path.parent / "table1.csv").exists() and (path.parent / "target_distributions.png").exists()


def _pick(table: pd.DataFrame, **where: object) -> pd.Series:
    mask = np.logical_and.reduce([table[column] == value for column, value in where.items()])
    found = table[mask]
    assert len(found) == 1, where
    return found.iloc[0]


def test_table1_values_are_the_seed_means(report: Report) -> None:
    path, runs, *_ = report
    table = pd.read_csv(path.parent / "table1.csv")
    gap = runs[(runs["experiment"] == "gap_intra") & (runs["train_size"] == 1000)]
    none = gap.loc[gap["strategy"] == "none", "test_mae"]
    full = gap.loc[(gap["strategy"] == "full") & (gap["pretrain_size"] == 4000), "test_mae"]
    row = _pick(table, experiment="gap_intra", metric="test_mae", strategy="full")
    assert row["mae_mean"] == pytest.approx(full.mean())
    assert row["mae_std"] == pytest.approx(full.std(ddof=1))
    assert row["n_seeds"] == 2 and row["train_size"] == 1000 and row["pretrain_size"] == 4000
    assert row["improvement_pct"] == pytest.approx(100 * (1 - full.mean() / none.mean()))
    # the pre-training column: the linked 4000-structure gap_pbe run, on its own property
    pre = _pick(table, experiment="gap_intra", metric="test_mae", strategy="pretrain")
    assert pre["property"] == "gap_pbe" and pre["mae_mean"] == pytest.approx(0.1 * 4**-0.3)
    # the subset metric is an extra row set
    subset = _pick(table, experiment="gap_intra", metric=SUBSET, strategy="full")
    assert subset["mae_mean"] == pytest.approx(1.5 * full.mean())
    assert set(table.loc[table["experiment"] == "eform_expt", "metric"]) == {"test_mae"}
    markdown = (path.parent / "table1.md").read_text()
    assert f"**{full.mean():.4g}" in markdown


def test_fits_and_extrapolations_match_the_generating_laws(report: Report) -> None:
    path, *_ = report
    fits = pd.read_csv(path.parent / "fits.csv")
    none = _pick(fits, experiment="gap_intra", strategy="none")
    # seed noise is a constant factor, so the seed means lie exactly on the power law
    assert none["slope"] == pytest.approx(-0.3) and none["intercept"] == pytest.approx(math.log10(2.2))
    assert none["n_points"] == 4 and none["linear"]
    over_pretrain = fits[(fits["experiment"] == "gap_intra") & (fits["x"] == "pretrain_size")]
    assert len(over_pretrain) == len(TRAIN_SIZES) and over_pretrain["slope"].to_numpy() == pytest.approx(-0.1)
    assert over_pretrain["n_points"].eq(2).all() and over_pretrain["slope_se"].isna().all()
    extra = pd.read_csv(path.parent / "extrapolations.csv")
    row = _pick(extra, experiment="gap_intra", strategy="full")
    assert row["linear"]  # both lines: four sizes, no lack of fit
    # 2.2 N^-0.3 = 1.3 * 4^-0.1 N^-0.22  ->  N = (2.2 / (1.3 * 4^-0.1)) ** (1 / 0.08)
    assert row["crossing_train_size"] == pytest.approx((2.2 / (1.3 * 4**-0.1)) ** (1 / 0.08), rel=1e-6)
    best = 1.3 * 1000**-0.22 * 4**-0.1
    assert row["best_mae"] == pytest.approx(best)
    assert row["none_size_to_match"] == pytest.approx((best / 2.2) ** (1 / -0.3), rel=1e-6)


def test_budget_and_intra_inter_tables(report: Report) -> None:
    path, *_ = report
    plane = pd.read_csv(path.parent / "budget_fit.csv")
    assert plane["experiment"].tolist() == ["gap_intra"]
    assert plane.loc[0, "alpha"] == pytest.approx(-0.22) and plane.loc[0, "beta"] == pytest.approx(-0.1)
    assert plane.loc[0, "break_even_ratio"] == pytest.approx(5 * 0.1 / 0.22)
    budget = pd.read_csv(path.parent / "budget.csv")
    assert set(budget["spend_on"]) == {"high-fidelity", "low-fidelity"} and (budget["mae"] > 0).all()
    table = pd.read_csv(path.parent / "intra_inter.csv")
    at = table[(table["strategy"] == "full") & (table["train_size"] == 300)].set_index("task_type")
    none_mean = np.mean([_mae("none", 300, 0, s, False) for s in SEEDS])
    full_mean = _mae("full", 300, 4000, 0.5, False)  # the noise factor is linear in the seed
    assert at.loc["intra", "improvement_pct"] == pytest.approx(100 * (1 - full_mean / none_mean))
    assert at.loc["inter", "improvement_pct"] < at.loc["intra", "improvement_pct"]


STOP_COLUMNS = ["best_epoch", "epochs_run", "stop_reason", "converged"]


def test_verdicts_resting_on_unconverged_runs_are_not_converged(report: Report) -> None:
    path, *_ = report
    claims = pd.read_csv(path.parent / "claims.csv", keep_default_na=False)
    # the capped run turns its line's slope (reproduced by the interval and the linearity test) into not converged ...
    line = _pick(claims, claim_id="loglog_train", check="gap_intra, head, pre-training 4000")
    assert line["verdict"] == NOT_CONVERGED
    assert line["detail"].startswith(
        "1 of 8 runs stopped at their epoch cap: gap_intra head N100 seed 0 (the interval alone: reproduced)"
    )
    # ... and no check at the largest training size, where it is not measured
    assert _pick(claims, claim_id="full_beats_head", check="gap_intra: gap_pbe → gap_hse")["verdict"] == "reproduced"
    assert _pick(claims, claim_id="full_beats_none", check="gap_intra: gap_pbe → gap_hse")["verdict"] == "reproduced"
    # the e_form_pbe pre-training misses 1.5 x its target: every check on a transfer from it is refused
    eform = _pick(claims, claim_id="full_beats_none", check="eform_expt: e_form_pbe → e_form_expt")
    assert eform["verdict"] == NOT_CONVERGED
    assert eform["detail"].startswith("pre-trained e_form_pbe test MAE 0.066 > 1.5 x 0.03 (N pretrain 4000)")
    assert set(claims.loc[claims["claim_id"] == "inter_full_no_gain", "verdict"]) == {NOT_CONVERGED}
    summary = (path.parent / "claims.md").read_text()
    assert "checks (reproduced / contradicted / not converged / inconclusive)" in summary
    assert "**not converged**" in summary and "Pipeline check" not in summary


def test_pretrained_models_table_and_curves(report: Report) -> None:
    path, *_ = report
    table = pd.read_csv(path.parent / "pretrain_models.csv")
    eform = _pick(table, property="e_form_pbe", pretrain_size=4000)
    assert eform["target"] == 0.03 and eform["ratio"] == pytest.approx(0.1 * 4**-0.3 / 0.03) and eform["judged"]
    assert not _pick(table, property="gap_pbe", pretrain_size=1000)["judged"]  # judged by the 4000 model
    text = path.read_text()
    # best epoch counted from 1 (the metric is 0-based); no duration logged by the fixture
    assert "| e_form_pbe | 4.0 k | 0.06598 | 0.03 | 2.20× | 9 | 12 | plateau | n/a | gates verdicts |" in text
    assert "![" in text and "(pretrain_curves.png)" in text


def test_runs_csv_says_how_each_run_stopped(report: Report, tmp_path: Path) -> None:
    path, *_ = report
    written = pd.read_csv(path.parent / "runs.csv").set_index("run_id")
    assert set(STOP_COLUMNS) <= set(written.columns)
    capped = written.loc[CAPPED]
    assert capped["stop_reason"] == "cap" and capped["best_epoch"] == 11 and not capped["converged"]
    assert written.loc["gap_intra-full-4000-1000-1", "stop_reason"] == "plateau"
    # runs from before early stopping: empty columns, and no verdict rests on them
    runs, _ = _synthetic()
    old = runs[runs["experiment"].isin(["eform_expt", "pretrain"])].drop(columns=STOP_COLUMNS)
    write_report(old, {}, tmp_path)
    written = pd.read_csv(tmp_path / "runs.csv")
    assert written[STOP_COLUMNS].isna().all().all()
    claims = pd.read_csv(tmp_path / "claims.csv")
    measured = claims[claims["measured"] != "not measured"]
    assert len(measured) and (measured["verdict"] == NOT_CONVERGED).all()
    assert measured["detail"].str.contains("have no stop reason").all()


def test_a_pipeline_check_profile_states_no_verdicts(tmp_path: Path) -> None:
    runs, histories = _synthetic()
    runs = runs[runs["experiment"].isin(["eform_expt", "pretrain"])]
    manifest = tmp_path / "experiments.yaml"
    manifest.write_text(yaml.safe_dump(_manifest(pipeline_check=True)))
    # the manifest reaches the writer as the source named in sources.md, as from `cgat-bench report`
    path = write_report(runs, histories, tmp_path / "report", sources={"manifest": str(manifest)})
    heading = "\n\n## Pipeline check: no verdicts\n"
    assert path.read_text().startswith("# Transfer-learning benchmark report" + heading)
    claims_md = (path.parent / "claims.md").read_text()
    assert claims_md.startswith("# Claims of the paper: verdicts" + heading) and "states no verdicts" in claims_md
    claims = pd.read_csv(path.parent / "claims.csv")
    # every check, measured or not, whatever its runs' stop reasons
    assert len(claims) > 1 and (claims["verdict"] == NOT_CONVERGED).all()
    assert claims["detail"].str.startswith("pipeline check profile").all()


def test_element_counts_and_target_stats(report: Report) -> None:
    path, _, elements, targets = report
    counts = pd.read_csv(path.parent / "element_counts.csv")
    hse_ids = targets.index[targets["gap_hse"].notna()]
    expected = sum("O" in elements[i] for i in hse_ids)
    assert counts[(counts["dataset"] == "gap_hse") & (counts["element"] == "O")]["count"].item() == expected
    pretrain_set = counts[counts["dataset"].str.startswith("pre-training")]
    with_lithium = sum("Li" in e for e in elements.values())
    assert pretrain_set.loc[pretrain_set["element"] == "Li", "count"].item() == with_lithium
    stats = pd.read_csv(path.parent / "target_stats.csv").set_index("property")
    assert stats.loc["gap_hse", "count"] == 100
    assert stats.loc["gap_pbe", "median"] == pytest.approx(targets["gap_pbe"].median())


def test_report_without_dataset_inputs_says_so(tmp_path: Path) -> None:
    runs, histories = _synthetic()
    only_one = runs[runs["experiment"].isin(["eform_expt", "pretrain"])]
    path = write_report(only_one, {}, tmp_path)
    text = path.read_text()
    assert "no targets table was given" in text and "no element lists were given" in text
    assert "learning curves: no per-epoch validation MAE" in text
    assert "no target is reached from two different source properties" in text
    assert not (tmp_path / "budget.png").exists()
    assert (tmp_path / "table1.csv").stat().st_size > 0


def test_report_names_the_software_of_its_runs_and_warns_when_mixed(tmp_path: Path) -> None:
    runs, histories = _synthetic()
    runs = runs.copy()
    one = "cgat_dgl 0.1.0 (abc), torch 2.2.1, dgl 2.1.0, pymatgen 2026.10.24"
    runs["software"] = one
    single = write_report(runs, histories, tmp_path / "single").read_text()
    assert f"Software of these runs: {one} ({len(runs)} runs)." in single
    assert "different versions" not in single
    runs.loc[runs.index[:3], "software"] = "unrecorded"
    mixed = write_report(runs, histories, tmp_path / "mixed").read_text()
    assert "the runs come from 2 different versions" in mixed
    assert "unrecorded (3 runs)" in mixed
    # another results version (cgat_dgl, torch or dgl): its runs become experiments of their own
    runs["software"] = one
    runs["results_version"] = "cgat_dgl 0.2.0, torch 2.2.1, dgl 2.1.0"
    older = runs["experiment"] == "gap_intra"
    runs.loc[older, "results_version"] = "cgat_dgl 0.1.0, torch 2.2.1, dgl 2.1.0"
    split = write_report(runs, histories, tmp_path / "versions")
    text = split.read_text()
    assert "2 results versions" in text
    table = pd.read_csv(split.parent / "table1.csv")
    assert "gap_intra [smoke / cgat_dgl 0.1.0, torch 2.2.1, dgl 2.1.0]" in set(table["experiment"])
    assert not any(name.startswith("gap_intra [smoke / cgat_dgl 0.2.0") for name in table["experiment"])


def test_software_label_of_recorded_and_older_runs() -> None:
    from cgat_dgl.versions import software_label, version_tags

    label = software_label(version_tags())
    assert label.startswith("cgat_dgl ") and "torch 2." in label and "dgl " in label
    assert software_label({"cgat.kind": "transfer"}) == "unrecorded"


def test_parent_metrics_name_strategy_size_and_the_pretraining_size_where_it_varies() -> None:
    from benchmarks.report.parents import parent_metrics

    nan = float("nan")
    rows = [
        ("a", "test_mae", "none", 100, 0, 0.5, 0.4, 0.6),
        ("a", "test_mae", "full", 100, 1000, 0.3, nan, nan),  # one seed: no interval
        ("a", "test_mae", "full", 100, 2000, 0.2, 0.1, 0.3),
        ("a", "test_mae_gap_above_0.1", "full", 100, 2000, 0.9, 0.8, 1.0),  # a subset: not a parent metric
        ("a", "test_mae", "pretrain", 5000, 0, 0.05, nan, nan),  # the pre-trained model's own row
        ("b", "test_mae", "head", 0.5, 1000, 0.7, 0.6, 0.8),
    ]
    table = pd.DataFrame(rows, columns=["experiment", "metric", "strategy", "train_size", "pretrain_size",
                                        "mae_mean", "mae_low", "mae_high"])
    assert parent_metrics(table) == {
        "a": {"test_mae.none.n100": 0.5, "test_mae.none.n100.low": 0.4, "test_mae.none.n100.high": 0.6,
              "test_mae.full.n100.pre1000": 0.3,
              "test_mae.full.n100.pre2000": 0.2, "test_mae.full.n100.pre2000.low": 0.1,
              "test_mae.full.n100.pre2000.high": 0.3},
        "b": {"test_mae.head.n0.5": 0.7, "test_mae.head.n0.5.low": 0.6, "test_mae.head.n0.5.high": 0.8},
    }
