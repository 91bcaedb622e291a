"""The MLflow UI in a real browser: headless Chromium (Debian's ``chromium``, installed by ``make test``)
against ``cgat-bench ui`` on a smoke store made by ``cgat-bench run``. The page it prints lists the
experiments' parent runs and charts their results, and the report run's figures load.
``CGAT_SCREENSHOTS=DIR`` also saves the pages as PNG files there (docs/ holds them)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from benchmarks.sample_data import write_gap_sample
from tests.chromium import Chromium
from tests.test_ui import free_port, group_alive, serves

REPO = Path(__file__).resolve().parents[1]
MANIFEST = """\
data:
  cache_dir: cache
profiles:
  smoke:
    model: smoke
    pretrain: {epochs: 2, batch_size: 32, lr: 1.0e-3, cycle_period: 2}
    transfer: {epochs: 2, batch_size: 32, lr: 1.0e-3, cycle_period: 2}
    max_train_size: 40
    seeds: [0, 1]
experiments:
  - name: gap_hse
    source: gap_pbe
    target: gap_hse
    strategies: [none, full]
    train_sizes: [20, 40]
"""
CHARTED = re.compile(r"test_mae\.[a-z_]+\.n\d+[a-z0-9.]*")  # the result metrics the parents chart
FIGURE = "report/learning_curves.png"


def text_of(dom: str) -> str:
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))


@pytest.fixture(scope="module")
def ui(shared_data_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A smoke store with its report, served by ``cgat-bench ui``: (base URL, tracking URI)."""
    from benchmarks.cli import main

    folder = tmp_path_factory.mktemp("browser")
    data = write_gap_sample(shared_data_path, folder / "small.jsonl.gz")
    manifest = folder / "experiments.yaml"
    manifest.write_text(MANIFEST)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    assert main(["run", str(manifest), "--profile", "smoke", "--data", str(data), "--work-dir", str(folder / "work"),
                 "--tracking-uri", uri, "--no-progress", "--report-dir", str(folder / "reports")]) == 0
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.cli", "ui", "--tracking-uri", uri, "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, cwd=REPO,
    )  # fmt: skip
    try:
        deadline = time.time() + 180
        while not serves(port) and time.time() < deadline and process.poll() is None:
            time.sleep(0.5)
        assert serves(port), "the UI never answered"
        yield f"http://127.0.0.1:{port}", uri
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        finally:
            if group_alive(process.pid):
                os.killpg(process.pid, signal.SIGKILL)


def _screenshots() -> Path | None:
    folder = os.environ.get("CGAT_SCREENSHOTS")
    return Path(folder) if folder else None


def _experiment_and_runs(uri: str) -> tuple[str, dict[str, object]]:
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.get_experiment_by_name("cgat-bench").experiment_id
    runs = client.search_runs([experiment_id], max_results=500)
    return experiment_id, {
        "parents": [r for r in runs if r.data.tags.get("cgat.parent") == "1"],
        "report": next(r for r in runs if r.data.tags.get("cgat.kind") == "report"),
    }


def test_browser_landing_page_lists_the_parent_runs_with_their_results(ui: tuple[str, str]) -> None:
    base, uri = ui
    experiment_id, runs = _experiment_and_runs(uri)
    gap = next(p for p in runs["parents"] if p.data.tags["cgat.experiment"] == "gap_hse")  # type: ignore[union-attr]
    assert "test_mae.full.n40" in gap.data.metrics
    # the page cgat-bench ui prints: the runs with a chart of every metric
    url = f"{base}/#/experiments/{experiment_id}/runs?compareRunsMode=CHART"
    names = [parent.info.run_name for parent in runs["parents"]]  # type: ignore[union-attr]
    with Chromium(height=2400) as browser:
        browser.open(url)
        # the runs list arrives first and the charts after it, later on a loaded machine
        browser.wait_for(f"document.body !== null && {json.dumps(names)}.every(n => document.body.innerText.includes(n))"
                         f" && /{CHARTED.pattern}/.test(document.body.innerHTML)")  # fmt: skip
        if (folder := _screenshots()) is not None:
            browser.screenshot(folder / "ui-runs.png")
        dom = browser.dom()
    page = text_of(dom)
    assert "Training runs" in page  # the model-training view, not the GenAI overview
    for name in names:
        assert name in page
    charts = set(CHARTED.findall(dom))
    assert charts and charts <= set(gap.data.metrics), page[:2000]  # the parents' results, charted


def test_browser_report_run_shows_its_figures(ui: tuple[str, str]) -> None:
    base, uri = ui
    experiment_id, runs = _experiment_and_runs(uri)
    report = runs["report"]
    page = f"{base}/#/experiments/{experiment_id}/runs/{report.info.run_id}/artifacts/{FIGURE}"
    with Chromium() as browser:
        browser.open(page)
        # the UI fetches the artifact and shows it from a blob: the image arrived
        shown = browser.wait_for(f"document.querySelector('img[alt=\"{FIGURE}\"][src^=\"blob:\"]') !== null")
        if (folder := _screenshots()) is not None:
            browser.screenshot(folder / "ui-report-figure.png")
        dom = browser.dom()
    assert shown, re.findall(r"<img[^>]{0,120}", dom)
