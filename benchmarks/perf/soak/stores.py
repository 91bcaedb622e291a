"""The soak's store against the reference store: runs lost, duplicated, left RUNNING, metrics that differ."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


KEY_METRICS = ("test_mae", "best_val_mae", "best_epoch", "test_rmse")
# Wall-clock measurements, which no two runs share: compared neither exactly nor at all.
TIMING_METRICS = frozenset({"train_seconds"})

@dataclass
class RunRecord:
    run_id: str
    status: str
    key: str | None  # cgat.run_key, None for parents and reports
    kind: str  # pretrain, transfer, parent, report, or untagged
    metrics: dict[str, float]
    histories: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # per-epoch metrics, by step


def read_store(tracking_uri: str, histories: bool = False) -> list[RunRecord]:
    """Every run of the benchmark's experiment in a store, deleted ones too; with ``histories``, the
    per-epoch metrics of keyed runs, every logged value in step order."""
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    from benchmarks.store import EXPERIMENT, KEY_TAG
    from cgat_dgl.training.run_log import EPOCH_METRICS

    if tracking_uri.startswith("sqlite:///") and not Path(tracking_uri[len("sqlite:///"):]).exists():
        return []  # not made here: the first cgat-bench run creates the database (and may be killed doing so)
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        return []
    records, token = [], None
    while True:
        page = client.search_runs(
            [experiment.experiment_id], run_view_type=ViewType.ALL, max_results=1000, page_token=token
        )
        for run in page:
            tags = run.data.tags
            kind = tags.get("cgat.kind") or ("parent" if tags.get("cgat.parent") == "1" else "untagged")
            record = RunRecord(run.info.run_id, run.info.status, tags.get(KEY_TAG), kind, dict(run.data.metrics))
            if histories and record.key:
                for name in EPOCH_METRICS:
                    logged = client.get_metric_history(run.info.run_id, name)
                    record.histories[name] = [(m.step, m.value) for m in sorted(logged, key=lambda m: (m.step, m.timestamp))]
            records.append(record)
        token = page.token
        if not token:
            return records


def training_left(tracking_uri: str, keys: set[str]) -> bool:
    finished = {r.key for r in read_store(tracking_uri) if r.key and r.status == "FINISHED"}
    return bool(keys - finished)


def _equal(reference: float, value: float | None, rtol: float) -> bool:
    if value is None:
        return False
    if math.isnan(reference) or math.isnan(value):
        return math.isnan(reference) and math.isnan(value)
    return value == reference if rtol == 0 else math.isclose(value, reference, rel_tol=rtol, abs_tol=0.0)


def compare_stores(reference: list[RunRecord], soak: list[RunRecord], rtol: float = 0.0) -> dict[str, Any]:
    """The checks of the soak store against the reference store.

    lost: reference keys with no FINISHED run in the soak; duplicated: keys with more than one FINISHED
    run; left_running: every RUNNING run of the soak store (keyed or not: a parent or report run killed
    before it ended counts too); mismatches: final metrics of the reference's keyed runs that differ in
    the soak's FINISHED run (all of the reference's metrics but timings, ``KEY_METRICS`` at least, and the whole
    history of each per-epoch metric the reference read)."""
    expected = {r.key: r for r in reference if r.key and r.status == "FINISHED"}
    problems = [
        f"reference run {r.run_id} ({r.key}) is {r.status}" for r in reference if r.key and r.status != "FINISHED"
    ]
    counts: dict[str, int] = {}
    for r in reference:
        if r.key and r.status == "FINISHED":
            counts[r.key] = counts.get(r.key, 0) + 1
    problems += [f"reference key {key} FINISHED {n} times" for key, n in counts.items() if n > 1]
    finished: dict[str, list[RunRecord]] = {}
    runs_per_key: dict[str, int] = {}
    for r in soak:
        if r.key:
            runs_per_key[r.key] = runs_per_key.get(r.key, 0) + 1
            if r.status == "FINISHED":
                finished.setdefault(r.key, []).append(r)
    lost = sorted(key for key in expected if key not in finished)
    duplicated = {key: len(runs) for key, runs in sorted(finished.items()) if len(runs) > 1}
    running = [
        {"run_id": r.run_id, "kind": r.kind, "key": r.key} for r in soak if r.status == "RUNNING"
    ]
    mismatches: list[dict[str, Any]] = []
    compared = 0
    for key, ref in sorted(expected.items()):
        if key not in finished:
            continue
        for run in finished[key]:
            for name in sorted((set(ref.metrics) | set(KEY_METRICS)) - TIMING_METRICS):
                value = run.metrics.get(name)
                if name not in ref.metrics:
                    mismatches.append({"key": key, "kind": ref.kind, "metric": name, "reference": None, "soak": value})
                    continue
                compared += 1
                if not _equal(ref.metrics[name], value, rtol):
                    mismatches.append(
                        {"key": key, "kind": ref.kind, "metric": name, "reference": ref.metrics[name], "soak": value}
                    )
            for name, history in sorted(ref.histories.items()):
                # every epoch logged once, with the uninterrupted run's value (none lost, none twice)
                compared += 1
                logged = run.histories.get(name, [])
                same = len(logged) == len(history) and all(
                    step == ref_step and _equal(ref_value, value, rtol)
                    for (ref_step, ref_value), (step, value) in zip(history, logged)
                )
                if not same:
                    mismatches.append({"key": key, "kind": ref.kind, "metric": f"{name} (every epoch)",
                                       "reference": history, "soak": logged})
    extra_keys = sorted(key for key in finished if key not in expected)
    return {
        "runs_expected": len(expected),
        "runs_finished": sum(1 for key in expected if key in finished),
        "lost": lost,
        "duplicated": duplicated,
        "left_running": running,
        "mismatches": mismatches,
        "metrics_compared": compared,
        "keys_with_several_runs": {k: n for k, n in sorted(runs_per_key.items()) if n > 1},
        "unexpected_keys": extra_keys,
        "reference_problems": problems,
    }
