"""The splits of a transfer task: the target's 80/10/10 split, and a pre-training split of the source
property from which every material of the target's validation and test sets is removed."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..data.splits import DEFAULT_FRACTIONS, Split, SplitError, load_or_create_split, read_split, remove_leakage, save_split

log = logging.getLogger(__name__)


def split_path(split_dir: Path, prop: str, seed: int) -> Path:
    return Path(split_dir) / f"{prop}-seed{seed}.json"


def pretrain_split_path(split_dir: Path, source_prop: str, target_prop: str, seed: int) -> Path:
    return Path(split_dir) / f"{source_prop}-without-{target_prop}-seed{seed}.json"


def ids_with(loaded: Any, prop: str) -> list[str]:
    if prop not in loaded.targets.columns:
        raise KeyError(f"no property {prop!r} in {loaded.report.path}; have {list(loaded.targets.columns)}")
    column = loaded.targets[prop]
    return sorted(i for i in column.index[column.notna()] if i in loaded.graphs)


def prepare_transfer(
    loaded: Any, source_prop: str, target_prop: str, split_dir: Path, seed: int
) -> tuple[Split, Split]:
    """(pre-training split, target split), both written under ``split_dir`` and reused from there.

    The target split covers the materials with ``target_prop``; the pre-training split is the split of
    the materials with ``source_prop`` minus the target's validation and test materials, so that no
    pre-trained weight has seen a material the transfer is scored on.
    """
    if source_prop == target_prop:
        raise ValueError(f"source and target are the same property ({source_prop!r})")
    target_ids = ids_with(loaded, target_prop)
    source_ids = ids_with(loaded, source_prop)
    for prop, ids in ((target_prop, target_ids), (source_prop, source_ids)):
        if len(ids) < 3:
            raise ValueError(f"{loaded.report.path}: only {len(ids)} materials have {prop!r}; a split needs 3")
    target_split = load_or_create_split(split_path(split_dir, target_prop, seed), target_ids, seed)
    base = load_or_create_split(split_path(split_dir, source_prop, seed), source_ids, seed)
    cleaned, removed = remove_leakage(base, target_split.val, target_split.test)
    log.info("pre-training split of %s: %d materials of %s val/test removed", source_prop, removed, target_prop)

    path = pretrain_split_path(split_dir, source_prop, target_prop, seed)
    if path.exists():
        stored, _ = read_split(path)
        if stored != cleaned:
            raise SplitError(f"{path}: differs from the leakage-free split derived from the stored splits; delete it")
    else:
        save_split(path, cleaned, seed, DEFAULT_FRACTIONS)
    return cleaned, target_split
