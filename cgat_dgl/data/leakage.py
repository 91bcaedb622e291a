"""Leakage control of transfer tasks: the one rule by which ``cgat compare`` and ``cgat-bench`` choose
the materials a source property is pre-trained on.

The pre-training split of a source property is that property's 80/10/10 split minus every material in
the validation or test split of any *protected* property. Protected are the task's own target(s),
every property of ``DEFAULT_PROTECTED`` that the loaded data holds, and any the user lists
(``cgat compare --protect``, the manifest's ``data.protected_targets``), never the source itself. So
no pre-trained weight has seen a material that a transfer to a high-fidelity property is scored on,
whichever of them the transfer targets, and both commands pre-train on the same materials.

The split of a property covers the materials with a value of it and a graph (``property_ids``), and
is stored once as ``{prop}-seed{seed}.json``; the pre-training split is stored as
``{source}-protected-{hash of the protected names}-seed{seed}.json``, so a split made under another
protected set (or the older ``{source}-without-{target}`` files) is never reused, and a stored one
that differs from the split derived from the stored property splits is a SplitError.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, MutableMapping, Sequence
from pathlib import Path
from typing import Any

from cgat_dgl.data.splits import (
    DEFAULT_FRACTIONS,
    Split,
    SplitError,
    load_or_create_split,
    read_split,
    remove_leakage,
    save_split,
)

log = logging.getLogger(__name__)

# The high-fidelity properties of the shared data format (mp_multifidelity.jsonl.gz: HSE06 band gaps,
# r2SCAN and experimental formation enthalpies), the targets of its natural transfer tasks. Their
# validation and test materials are kept out of every pre-training split, whatever the task's target.
DEFAULT_PROTECTED: tuple[str, ...] = ("gap_hse", "e_form_r2scan", "e_form_expt")


def split_path(split_dir: Path, prop: str, seed: int) -> Path:
    return Path(split_dir) / f"{prop}-seed{seed}.json"


def protected_key(protected: Iterable[str]) -> str:
    """A short hash of a set of protected property names, independent of their order."""
    return hashlib.sha1("\n".join(sorted(set(protected))).encode()).hexdigest()[:10]


class LeakageError(ValueError):
    """A pre-training split that the leakage rule leaves without training, validation or test materials."""


def pretrain_split_path(split_dir: Path, source: str, protected: Iterable[str], seed: int) -> Path:
    return Path(split_dir) / f"{source}-protected-{protected_key(protected)}-seed{seed}.json"


def property_ids(loaded: Any, prop: str) -> list[str]:
    """The materials of ``prop``'s split: those with a value of it and a graph, sorted."""
    if prop not in loaded.targets.columns:
        raise KeyError(f"no property {prop!r} in {loaded.report.path}; have {list(loaded.targets.columns)}")
    column = loaded.targets[prop]
    # load_dataset keeps only the records whose graph was built, so every row of its targets has a
    # graph and the second condition removes nothing; it guards a LoadedData put together otherwise.
    return sorted(i for i in column.index[column.notna()] if i in loaded.graphs)


def holds(loaded: Any, prop: str) -> bool:
    """Whether the loaded data has at least one value of ``prop``."""
    return prop in loaded.targets.columns and bool(loaded.targets[prop].notna().any())


def protected_candidates(source: str, targets: Iterable[str], extra: Iterable[str] = ()) -> tuple[str, ...]:
    """The protected properties of a pre-training on ``source`` before the data is known: the targets,
    ``DEFAULT_PROTECTED`` and ``extra``, without the source (the data leaves out the defaults it lacks)."""
    return tuple(sorted({*targets, *DEFAULT_PROTECTED, *extra} - {source}))


def protected_properties(
    loaded: Any, source: str, targets: Iterable[str], extra: Iterable[str] = ()
) -> tuple[str, ...]:
    """The protected properties of a pre-training on ``source`` with this data, sorted.

    A target or an explicitly listed property that the data lacks is a ValueError naming it and the
    available properties; a ``DEFAULT_PROTECTED`` property without any value in the data is left out.
    """
    named = [*targets, *extra]
    unknown = [name for name in dict.fromkeys(named) if name not in loaded.targets.columns]
    if unknown:
        raise ValueError(
            f"unknown protected propert{'y' if len(unknown) == 1 else 'ies'} {', '.join(map(repr, unknown))}; "
            f"available in {loaded.report.path}: {', '.join(map(str, loaded.targets.columns))}"
        )
    defaults = [name for name in DEFAULT_PROTECTED if holds(loaded, name)]
    return tuple(sorted({*named, *defaults} - {source}))


def property_split(
    loaded: Any, prop: str, split_dir: Path, seed: int, cache: MutableMapping[str, Split] | None = None
) -> Split:
    """The 80/10/10 split over ``property_ids(loaded, prop)``, written once under ``split_dir`` and reused."""
    if cache is not None and prop in cache:
        return cache[prop]
    split = load_or_create_split(split_path(split_dir, prop, seed), property_ids(loaded, prop), seed)
    if cache is not None:
        cache[prop] = split
    return split


def pretrain_split(
    loaded: Any,
    source: str,
    protected: Sequence[str],
    split_dir: Path,
    seed: int,
    cache: MutableMapping[str, Split] | None = None,
) -> Split:
    """``source``'s split minus the validation and test materials of every protected property (see
    ``protected_properties``), stored under ``split_dir`` and checked against the stored file."""
    protected = tuple(sorted(set(protected) - {source}))
    base = property_split(loaded, source, split_dir, seed, cache)
    blocked = []
    for prop in protected:
        split = property_split(loaded, prop, split_dir, seed, cache)
        blocked += [split.val, split.test]
    cleaned, removed = remove_leakage(base, *blocked)
    empty = [name for name, part in (("training", cleaned.train), ("validation", cleaned.val), ("test", cleaned.test)) if not part]
    if empty:
        raise LeakageError(
            f"pre-training on {source}: no {' or '.join(empty)} material is left after the leakage rule removed "
            f"{removed} of {len(base.ids)} materials, those in the validation or test sets of {', '.join(protected)} "
            f"(a pre-trained model must not see the materials its transfers are judged on). Add materials without "
            "these properties to the data, so that the source has materials of its own, or protect fewer "
            "properties (the manifest's data.protected_targets and cgat compare's --protect; the targets of the "
            "source's own tasks are always protected)"
        )
    log.info(
        "pre-training split of %s: %d materials of the val/test sets of %s removed",
        source, removed, ", ".join(protected) or "no property",
    )  # fmt: skip
    path = pretrain_split_path(split_dir, source, protected, seed)
    if path.exists():
        stored, _ = read_split(path)
        if stored != cleaned:
            raise SplitError(f"{path}: differs from the leakage-free split derived from the stored splits; delete it")
    else:
        save_split(path, cleaned, seed, DEFAULT_FRACTIONS)
    return cleaned


def load_with_protected(path: Path | str, properties: Sequence[str], **kwargs: Any) -> Any:
    """``load_dataset`` of ``properties`` plus every ``DEFAULT_PROTECTED`` property the file offers.

    A file without some of the defaults is read a second time to find the ones it offers (loading
    a property it lacks is an error); a missing one of ``properties`` is the usual error.
    """
    from cgat_dgl.data.dataset import load_dataset
    from cgat_dgl.data.readers import load_records
    from cgat_dgl.data.records import DataError
    from cgat_dgl.data.validation import UNKNOWN_PROPERTY

    wanted = list(dict.fromkeys(properties))
    optional = [name for name in DEFAULT_PROTECTED if name not in wanted]
    if optional:
        try:
            return load_dataset(path, [*wanted, *optional], **kwargs)
        except DataError as error:
            if error.reason != UNKNOWN_PROPERTY:
                raise
        _, report = load_records(path, None, on_error="skip")
        optional = [name for name in optional if report.per_property.get(name)]
    return load_dataset(path, [*wanted, *optional], **kwargs)


__all__ = [
    "DEFAULT_PROTECTED",
    "LeakageError",
    "holds",
    "load_with_protected",
    "pretrain_split",
    "pretrain_split_path",
    "property_ids",
    "property_split",
    "protected_candidates",
    "protected_key",
    "protected_properties",
    "split_path",
]
