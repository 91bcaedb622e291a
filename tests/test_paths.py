"""Default paths follow the user, not the install: the store, runs/, the Optuna storage and the reports
of a command lie beside its manifest (else in the working directory), and a report lies beside, and
names, the store it was computed from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from benchmarks.cli import ReportSources, build_parser, main, write_sources
from benchmarks.paths import command_paths, report_root, store_slug
from benchmarks.tuning.cli import tune_paths
from cgat_dgl.training.tracking import Tracker, redact_uri
from tests.training_fixtures import real_rows

MANIFEST = """\
data: {path: data.jsonl, cache_dir: cache}
profiles:
  smoke:
    model: smoke
    pretrain: {epochs: 1, batch_size: 8, lr: 1.0e-3, cycle_period: 1}
    transfer: {epochs: 1, batch_size: 8, lr: 1.0e-3, cycle_period: 1}
experiments:
  - name: gap
    source: gap_pbe
    target: gap_hse
    strategies: [none, full]
    train_sizes: [1.0]
"""
PASSWORD = "s3cr3t-Pw"
POSTGRES = f"postgresql://bench:{PASSWORD}@db.example.org:5432/cgat"


@pytest.fixture(autouse=True)
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Commands run from a folder of their own with no store in the environment, so a default that
    fell back to the working directory (or the package) shows up as a file outside the projects."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    folder = tmp_path / "cwd"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


def project(root: Path, name: str) -> Path:
    """A manifest and its data file (12 real materials with an HSE gap and 20 with a PBE gap only: enough
    for the plan-time checks of a dry run, the leakage rule included) in a folder of its own."""
    folder = root / name
    folder.mkdir()
    pbe_only = [row for row in real_rows(80, "gap_pbe") if row.get("gap_hse") is None][:20]
    rows = [*real_rows(12, "gap_hse"), *pbe_only]
    (folder / "data.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    manifest = folder / "experiments.yaml"
    manifest.write_text(MANIFEST)
    return manifest


def empty_store(folder: Path) -> str:
    """A store with the benchmark's experiment and no run: the report command writes a report of nothing."""
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    Tracker.experiment_id_for("cgat-bench", uri)
    return uri


def sqlite_uri(folder: Path) -> str:
    return f"sqlite:///{(folder / 'mlflow' / 'mlflow.db').as_posix()}"


def test_each_manifest_gets_its_own_defaults(tmp_path: Path, elsewhere: Path) -> None:
    parser = build_parser()
    seen = []
    for name in ("a", "b"):
        manifest = project(tmp_path, name)
        folder = manifest.parent.resolve()
        run = command_paths(manifest)
        assert run.tracking_uri == sqlite_uri(folder)
        assert run.work_dir == folder / "runs"
        assert run.report_root == folder / "mlflow" / "reports"
        tune = tune_paths(parser.parse_args(["tune", str(manifest), "--study", "s"]))
        assert tune.storage == f"sqlite:///{(folder / 'mlflow' / 'optuna.db').as_posix()}"
        assert (tune.tracking_uri, tune.work_dir) == (run.tracking_uri, run.work_dir)  # shared with run
        seen.append({run.tracking_uri, str(run.work_dir), str(run.report_root), tune.storage})
    assert not seen[0] & seen[1]


def test_a_dry_run_creates_its_store_and_runs_beside_its_manifest(tmp_path: Path, elsewhere: Path, capsys) -> None:
    manifests = [project(tmp_path, "a"), project(tmp_path, "b")]
    for manifest in manifests:
        folder = manifest.parent.resolve()
        assert main(["run", str(manifest), "--profile", "smoke", "--dry-run"]) == 0
        out = capsys.readouterr().out
        assert f"store {sqlite_uri(folder)}, work dir {folder / 'runs'}" in out and "runs: " in out
        assert (folder / "mlflow" / "mlflow.db").is_file()
    assert list(elsewhere.iterdir()) == []  # nothing in the working directory


def test_explicit_options_and_the_environment_win(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = project(tmp_path, "a")
    chosen = command_paths(manifest, "sqlite:////srv/x/mlflow.db", tmp_path / "w", tmp_path / "r")
    assert (chosen.tracking_uri, chosen.work_dir, chosen.report_root) == (
        "sqlite:////srv/x/mlflow.db", tmp_path / "w", tmp_path / "r",
    )  # fmt: skip
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////srv/env/mlflow.db")
    from_env = command_paths(manifest)
    assert from_env.tracking_uri == "sqlite:////srv/env/mlflow.db"
    assert from_env.report_root == Path("/srv/env/reports")  # the report follows the store
    tune = tune_paths(build_parser().parse_args(["tune", str(manifest), "--study", "s", "--storage", "sqlite:////o.db"]))
    assert (tune.storage, tune.tracking_uri) == ("sqlite:////o.db", "sqlite:////srv/env/mlflow.db")


def test_without_a_manifest_the_working_directory_is_the_base(elsewhere: Path) -> None:
    paths = command_paths(None)
    assert paths.base == elsewhere.resolve()
    assert paths.tracking_uri == sqlite_uri(elsewhere.resolve())
    assert paths.report_root == elsewhere.resolve() / "mlflow" / "reports"


def test_reports_over_two_stores_never_share_a_folder(tmp_path: Path) -> None:
    roots = {
        report_root(sqlite_uri(tmp_path / "a"), tmp_path),
        report_root(sqlite_uri(tmp_path / "b"), tmp_path),
        report_root(f"sqlite:///{tmp_path / 'a' / 'mlflow' / 'other.db'}", tmp_path),  # same folder, other file
        report_root(POSTGRES, tmp_path),
        report_root("postgresql://bench@db.example.org:5432/other", tmp_path),
        report_root("http://tracking.example.org:5000", tmp_path),
    }
    assert len(roots) == 6
    assert report_root("http://tracking.example.org:5000", tmp_path) == (
        tmp_path / "mlflow" / "reports" / "http-tracking.example.org-5000"
    )


def test_a_second_store_does_not_overwrite_the_first_report(tmp_path: Path, elsewhere: Path, capsys) -> None:
    first = empty_store(elsewhere / "mlflow")  # the working directory's default store
    second = empty_store(tmp_path / "other" / "mlflow")
    assert main(["report", "--profile", "smoke"]) == 0
    assert main(["report", "--profile", "smoke", "--tracking-uri", second]) == 0
    one, two = elsewhere / "mlflow" / "reports" / "smoke", tmp_path / "other" / "mlflow" / "reports" / "smoke"
    for folder, uri in ((one, first), (two, second)):
        assert (folder / "report.md").is_file()
        assert f"- Store: `{uri}`" in (folder / "sources.md").read_text()
    # the sources file is logged with the rest of the report, in the store it describes
    client = MlflowClient(tracking_uri=second)
    experiment = client.get_experiment_by_name("cgat-bench").experiment_id
    (run,) = client.search_runs([experiment], "tags.`cgat.kind` = 'report'")
    assert "report/sources.md" in {item.path for item in client.list_artifacts(run.info.run_id, "report")}


def test_an_explicit_out_is_honoured(tmp_path: Path, elsewhere: Path, capsys) -> None:
    uri = empty_store(tmp_path / "store")
    chosen = tmp_path / "chosen"
    assert main(["report", "--profile", "smoke", "--seeds", "0-1", "--tracking-uri", uri, "--out", str(chosen)]) == 0
    sources = (chosen / "smoke-seeds-0-1" / "sources.md").read_text()
    assert "- Seeds (transfer runs): 0, 1" in sources and "- Manifest: none given" in sources
    assert not (tmp_path / "store" / "reports").exists()
    old = build_parser().parse_args(["report", "--report-dir", "benchmarks/results/reports"])
    assert old.report_dir == Path("benchmarks/results/reports")  # the old name still works


def test_a_report_of_one_split_keeps_its_pretrainings_and_transfers_only(tmp_path: Path) -> None:
    import pandas as pd

    from benchmarks.cli import in_splits

    runs = pd.DataFrame({"run_id": ["p0", "p1", "t0", "t1", "t1b"], "kind": ["pretrain", "pretrain", "transfer", "transfer", "transfer"],
                         "split_seed": [0, 1, 0, 1, 1]})
    studies = pd.DataFrame({"study": ["s"], "run_id": ["trial"]})
    kept, kept_studies = in_splits(runs, studies, [1])
    assert kept["run_id"].tolist() == ["p1", "t1", "t1b"] and kept_studies.empty  # studies tune on split 0
    kept, kept_studies = in_splits(runs, studies, [0])
    assert kept["run_id"].tolist() == ["p0", "t0"] and len(kept_studies) == 1
    uri = empty_store(tmp_path / "store")
    assert main(["report", "--profile", "smoke", "--splits", "1", "--tracking-uri", uri, "--out", str(tmp_path / "r")]) == 0
    assert "- Splits (every run, pre-trainings too): 1" in (tmp_path / "r" / "smoke-split-1" / "sources.md").read_text()
    assert main(["report", "--profile", "smoke", "--splits", "x", "--tracking-uri", uri]) == 2


def test_a_password_never_reaches_a_folder_name_or_the_sources_file(tmp_path: Path) -> None:
    assert PASSWORD not in redact_uri(POSTGRES) and "bench:***@" in redact_uri(POSTGRES)
    root = report_root(POSTGRES, tmp_path)
    assert root == tmp_path / "mlflow" / "reports" / "postgresql-db.example.org-5432-cgat"
    assert PASSWORD not in store_slug(f"postgresql://u:{PASSWORD}@h/{'d' * 200}?password={PASSWORD}")
    manifest = project(tmp_path, "a")
    sources = ReportSources(POSTGRES, manifest, "cpu", [0, 1, 2], ["paper"])
    text = write_sources(sources, root / sources.name).read_text()
    assert PASSWORD not in text
    assert f"- Store: `{redact_uri(POSTGRES)}`" in text
    assert f"- Manifest: `{manifest.resolve()}`" in text
    assert "- Profile: cpu" in text and "- Seeds (transfer runs): 0, 1, 2" in text and "- Suites: paper" in text
    assert (root / "cpu-seeds-0-1-2-paper" / "sources.md").is_file()
    assert PASSWORD not in str(root / sources.name)
