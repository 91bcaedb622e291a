"""``cgat-bench ui``: the benchmark's page in MLflow's model-training view, and a server that stops with it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serves(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
def test_ui_prints_the_training_view_and_stops_with_sigterm(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    # a store made before the experiment carried its kind
    experiment_id = client.create_experiment("cgat-bench", artifact_location=str(tmp_path / "artifacts"))
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.cli", "ui", "--tracking-uri", uri, "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True, cwd=REPO,
    )  # fmt: skip
    try:
        first = process.stdout.readline() if process.stdout else ""
        assert f"http://127.0.0.1:{port}/#/experiments/{experiment_id}/runs" in first
        assert client.get_experiment(experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
        deadline = time.time() + 120
        while not serves(port) and time.time() < deadline and process.poll() is None:
            time.sleep(0.5)
        assert serves(port), "the UI never answered"
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        deadline = time.time() + 30
        while group_alive(process.pid) and time.time() < deadline:
            time.sleep(0.5)
        assert not group_alive(process.pid), "a process of the UI outlived it"
        assert not serves(port)
    finally:
        if group_alive(process.pid):
            os.killpg(process.pid, signal.SIGKILL)


def studies_served(port: int) -> list[str]:
    import json

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as response:
            return [study["study_name"] for study in json.loads(response.read())["study_summaries"]]
    except OSError:
        return []


@pytest.mark.slow
def test_dashboard_serves_the_optuna_studies_and_stops_with_sigterm(tmp_path: Path) -> None:
    import optuna

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="gap_hse_search-full", storage=storage)
    study.optimize(lambda trial: trial.suggest_float("lr", 1e-5, 1e-2, log=True), n_trials=2)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.cli", "dashboard", "--storage", storage, "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True, cwd=REPO,
    )  # fmt: skip
    try:
        first = process.stdout.readline() if process.stdout else ""
        assert f"http://127.0.0.1:{port}/dashboard" in first
        deadline = time.time() + 60
        while not studies_served(port) and time.time() < deadline and process.poll() is None:
            time.sleep(0.5)
        assert studies_served(port) == ["gap_hse_search-full"]
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        assert not studies_served(port)
    finally:
        if group_alive(process.pid):
            os.killpg(process.pid, signal.SIGKILL)


def test_dashboard_without_studies_says_where_it_looked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.cli import main

    assert main(["dashboard", "--storage", f"sqlite:///{tmp_path / 'none.db'}"]) == 2
    assert "no Optuna storage at" in capsys.readouterr().err
