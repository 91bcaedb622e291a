"""Checks of a manifest against its data before anything trains (and in ``--dry-run``).

A misspelt property or a task with too few materials would otherwise surface only when its first run
starts, after the graphs are built and other runs have trained. These checks read the data file's
property counts once (no structures are parsed) and name the manifest line of each problem.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from benchmarks.manifest import Manifest

# An 80/10/10 split needs 10 materials to hold one validation and one test material.
MIN_MATERIALS = 10


class DataCheckError(ValueError):
    pass


def property_counts(data_path: Path) -> dict[str, int]:
    """Materials per property in the data (after the record checks), read without building graphs."""
    from cgat_dgl.data.readers import load_records

    _, report = load_records(data_path, None, on_error="skip")
    return dict(report.per_property)


def manifest_problems(manifest: Manifest, counts: Mapping[str, int], minimum: int = MIN_MATERIALS) -> list[str]:
    """Every experiment's source and target (and the protected targets) that the data lacks or holds
    too few of, each with its manifest line."""
    available = ", ".join(f"{name} ({n})" for name, n in sorted(counts.items())) or "none"
    problems: list[str] = []
    for index, experiment in enumerate(manifest.experiments):
        for field in ("source", "target"):
            name = getattr(experiment, field)
            where = manifest.where("experiments", index, field)
            if name not in counts:
                problems.append(f"{where}: {name!r} is not a property of the data; available: {available}")
            elif counts[name] < minimum:
                problems.append(
                    f"{where}: {name!r} has {counts[name]} materials in the data, fewer than the {minimum} a "
                    "train/validation/test split needs"
                )
    for index, name in enumerate(manifest.data.protected_targets):
        if name not in counts:
            where = manifest.where("data", "protected_targets", index)
            problems.append(f"{where}: {name!r} is not a property of the data; available: {available}")
    return problems


def check_manifest_data(manifest: Manifest, data_path: Path, minimum: int = MIN_MATERIALS) -> dict[str, int]:
    """Raise a ``DataCheckError`` listing every problem; return the property counts."""
    counts = property_counts(data_path)
    problems = manifest_problems(manifest, counts, minimum)
    if problems:
        raise DataCheckError(f"the manifest does not fit the data {data_path}:\n  " + "\n  ".join(problems))
    return counts
