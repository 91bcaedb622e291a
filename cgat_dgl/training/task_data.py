"""The splits of a transfer task: the target's 80/10/10 split, and a pre-training split of the source
property by the leakage rule of ``cgat_dgl.data.leakage`` (the same as ``cgat-bench``'s)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..data.leakage import pretrain_split, property_ids, property_split, protected_properties
from ..data.splits import Split

log = logging.getLogger(__name__)


def prepare_transfer(
    loaded: Any, source_prop: str, target_prop: str, split_dir: Path, seed: int, protect: Sequence[str] = ()
) -> tuple[Split, Split]:
    """(pre-training split, target split), both written under ``split_dir`` and reused from there.

    The target split covers the materials with ``target_prop``; the pre-training split is the split of
    the materials with ``source_prop`` minus the validation and test materials of the target, of every
    default high-fidelity property the data holds and of ``protect`` (``leakage.protected_properties``),
    so that no pre-trained weight has seen a material a transfer is scored on.
    """
    if source_prop == target_prop:
        raise ValueError(f"source and target are the same property ({source_prop!r})")
    for prop in (target_prop, source_prop):
        count = len(property_ids(loaded, prop))
        if count < 3:
            raise ValueError(f"{loaded.report.path}: only {count} materials have {prop!r}; a split needs 3")
    protected = protected_properties(loaded, source_prop, [target_prop], protect)
    splits: dict[str, Split] = {}
    target_split = property_split(loaded, target_prop, split_dir, seed, splits)
    cleaned = pretrain_split(loaded, source_prop, protected, split_dir, seed, splits)
    return cleaned, target_split
