"""Summaries of the datasets themselves (the paper's Fig. 2 and Fig. 9)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd
from pymatgen.core.periodic_table import Element

STAT_COLUMNS = ("property", "count", "mean", "median", "std", "min", "max", "fraction_zero")
COUNT_COLUMNS = ("dataset", "element", "Z", "count")


def property_base(column: str) -> str:
    """``gap_hse`` -> ``gap``: properties share a base name and differ by the fidelity suffix."""
    return column.rsplit("_", 1)[0] if "_" in column else column


def property_groups(columns: Iterable[str]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for column in columns:
        groups.setdefault(property_base(column), []).append(column)
    return groups


def target_stats(targets: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for column in targets.columns:
        values = pd.to_numeric(targets[column], errors="coerce").dropna()
        rows.append(
            {
                "property": column,
                "count": int(values.size),
                "mean": float(values.mean()) if values.size else np.nan,
                "median": float(values.median()) if values.size else np.nan,
                "std": float(values.std()) if values.size > 1 else np.nan,
                "min": float(values.min()) if values.size else np.nan,
                "max": float(values.max()) if values.size else np.nan,
                # metals in band-gap data; informative for every property that can be exactly zero
                "fraction_zero": float((values == 0).mean()) if values.size else np.nan,
            }
        )
    return pd.DataFrame(rows, columns=list(STAT_COLUMNS))


def dataset_members(
    targets: pd.DataFrame | None,
    elements: Mapping[str, list[str]],
    low_fidelity: Iterable[str],
    high_fidelity: Iterable[str],
) -> dict[str, list[str]]:
    """Material ids per dataset: the pre-training set (any low-fidelity value present) and one set
    per high-fidelity property; without targets, every material with elements forms one set."""
    if targets is None:
        return {"all materials": sorted(elements)}
    low = [c for c in low_fidelity if c in targets.columns]
    members: dict[str, list[str]] = {}
    if low:
        members["pre-training (" + ", ".join(low) + ")"] = list(targets.index[targets[low].notna().any(axis=1)])
    for column in high_fidelity:
        if column in targets.columns and column not in low:
            members[column] = list(targets.index[targets[column].notna()])
    if not members:
        members["all materials"] = list(targets.index)
    return members


def element_counts(elements: Mapping[str, list[str]], members: Mapping[str, list[str]]) -> pd.DataFrame:
    """Number of compounds containing each element, per dataset."""
    rows = []
    for dataset, ids in members.items():
        counter: Counter[str] = Counter()
        for material_id in ids:
            symbols = elements.get(material_id)
            if symbols is not None:
                counter.update(set(symbols))
        for symbol, count in counter.items():
            try:
                z = Element(symbol).Z
            except ValueError:
                raise ValueError(f"material list for dataset {dataset!r}: unknown element symbol {symbol!r}") from None
            rows.append({"dataset": dataset, "element": symbol, "Z": z, "count": count})
    frame = pd.DataFrame(rows, columns=list(COUNT_COLUMNS))
    return frame.sort_values(["dataset", "Z"]).reset_index(drop=True)


def periodic_position(z: int) -> tuple[int, int]:
    """(row, column), 0-based, in an 18-column table with the f-block as two extra rows below."""
    if 57 <= z <= 71:
        return 8, 2 + (z - 57)
    if 89 <= z <= 103:
        return 9, 2 + (z - 89)
    element = Element.from_Z(z)
    return element.row - 1, element.group - 1
