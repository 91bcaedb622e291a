"""The experiments' parent runs with their results at a glance: what a user of the MLflow UI sees in the
runs table before opening a report.

After a report is written, each experiment's parent run gets, per strategy and training size, the
mean test MAE over seeds and its 95 % interval as metrics (``test_mae.<strategy>.n<size>`` with
``.low`` and ``.high``; ``.pre<size>`` where the experiment varies the pre-training size), its rows of
Table 1 as ``table1.csv``, its children's wall time (the parent ends when its last child ended), and a
link to the report run in its description and in the tag ``cgat.report_run_id``.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Metric

REPORT_RUN_TAG = "cgat.report_run_id"
NOTE_TAG = "mlflow.note.content"  # the run's description in the UI


def _size(value: Any) -> str:
    return str(int(value)) if float(value).is_integer() else f"{float(value):g}"


def parent_metrics(table: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Metrics by experiment from Table 1's rows (``benchmarks.report.tables.table1``): the test MAE
    of each strategy and training size, pre-trained models' own rows left out."""
    rows = table[(table["metric"] == "test_mae") & (table["strategy"] != "pretrain")]
    found: dict[str, dict[str, float]] = {}
    for experiment, group in rows.groupby("experiment"):
        # runs from scratch have pre-training size 0; a suffix only where transfers differ in it
        several_pretrain_sizes = group.loc[group["pretrain_size"] > 0, "pretrain_size"].nunique() > 1
        metrics: dict[str, float] = {}
        for row in group.itertuples():
            name = f"test_mae.{row.strategy}.n{_size(row.train_size)}"
            if several_pretrain_sizes and row.pretrain_size:
                name += f".pre{_size(row.pretrain_size)}"
            metrics[name] = float(row.mae_mean)
            for bound in ("low", "high"):
                value = getattr(row, f"mae_{bound}")
                if value is not None and not (isinstance(value, float) and math.isnan(value)):
                    metrics[f"{name}.{bound}"] = float(value)
        found[str(experiment)] = metrics
    return found


def annotate_parents(
    client: MlflowClient, experiment_id: str, profile: str, table: pd.DataFrame, report_run_id: str
) -> list[str]:
    """Give each experiment's parent run (of ``profile``) its results, wall time and report link;
    returns the experiments annotated."""
    by_experiment = parent_metrics(table)
    done = []
    for experiment, metrics in by_experiment.items():
        parents = client.search_runs(
            [experiment_id],
            filter_string=(f"tags.`cgat.parent` = '1' and tags.`cgat.experiment` = '{experiment}' "
                           f"and tags.`cgat.profile` = '{profile}'"),
            max_results=1,
        )
        if not parents:
            continue
        parent = parents[0]
        run_id = parent.info.run_id
        children = client.search_runs(
            [experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{run_id}'", max_results=5000
        )
        now = max((child.info.end_time or 0 for child in children), default=0) or parent.info.end_time
        client.log_batch(run_id, metrics=[Metric(name, value, now, 0) for name, value in sorted(metrics.items())])
        rows = table[table["experiment"] == experiment]
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "table1.csv"
            rows.to_csv(path, index=False)
            client.log_artifact(run_id, str(path))
        link = f"#/experiments/{experiment_id}/runs/{report_run_id}"
        client.set_tag(run_id, REPORT_RUN_TAG, report_run_id)
        client.set_tag(run_id, NOTE_TAG, f"Results of {experiment} ({profile} profile): the metrics of this run "
                                         f"(mean test MAE over seeds, with .low/.high the 95 % interval) and "
                                         f"`table1.csv`; the whole report is [its report run]({link}).")
        if now:
            client.set_terminated(run_id, status="FINISHED", end_time=now)
        done.append(experiment)
    return done
