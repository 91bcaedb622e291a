"""Real rows of the shared data set (``shared_data_path`` in conftest) for the graph tests."""

from __future__ import annotations

import gzip
import json
from functools import lru_cache
from pathlib import Path

from cgat_dgl.data.records import MaterialRecord

PROPERTIES = ("e_form_pbe", "gap_pbe", "volume_pbe", "gap_hse", "e_form_r2scan", "e_form_expt")


@lru_cache(maxsize=1)
def _all_rows(path: Path) -> tuple[dict, ...]:
    with gzip.open(path, "rt") as stream:
        return tuple(json.loads(line) for line in stream)


def rows_by_size(path: Path, count: int, largest: int = 2, quantile: float = 0.9) -> list[dict]:
    """``count`` rows: a 1-atom cell, sizes spread up to ``quantile`` of all sizes, and the largest."""
    rows = sorted(_all_rows(path), key=lambda row: (row["natoms"], row["id"]))
    spread = count - largest
    top = int(quantile * (len(rows) - 1))
    picks = {round(k * top / (spread - 1)) for k in range(spread)}
    picks.update(range(len(rows) - largest, len(rows)))
    return [rows[i] for i in sorted(picks)]


def first_rows(path: Path, count: int) -> list[dict]:
    return list(_all_rows(path)[:count])


def record_of(row: dict, source: str = "test.jsonl:1") -> MaterialRecord:
    targets = {name: float(row[name]) for name in PROPERTIES if row.get(name) is not None}
    return MaterialRecord(id=row["id"], source=source, targets=targets, payload=row["cif"], kind="cif")
