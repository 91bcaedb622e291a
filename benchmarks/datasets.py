"""The data of a manifest: graphs and targets loaded once, fixed splits, nested size subsets, leakage control."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from benchmarks.manifest import Manifest, Size
from benchmarks.plan import PretrainRun, resolve_size, task_targets
from cgat_dgl.data.dataset import GraphDataset, LoadedData
from cgat_dgl.data.splits import Split
from cgat_dgl.data.leakage import load_with_protected, pretrain_split, property_split, protected_properties
from cgat_dgl.data.splits import Split, nested_subsets
from cgat_dgl.graphs.neighbors import GraphParams


@lru_cache(maxsize=8)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def evaluation_subset(ids: Sequence[str], cap: int | None, seed: int) -> list[str]:
    """All of ``ids``, or a seeded random subset of ``cap`` of them, nested across caps (a sorted
    prefix would measure every capped error on the alphabetically first materials)."""
    if not cap or cap >= len(ids):
        return list(ids)
    return list(nested_subsets(ids, [cap], seed=seed)[cap])


@dataclass
class TaskData:
    loaded: LoadedData
    split_dir: Path
    split_seed: int
    # The targets of the manifest's tasks by source property, and the manifest's protected_targets:
    # with the defaults the data holds, the properties a pre-training split is protected from.
    targets_by_source: dict[str, tuple[str, ...]] = field(default_factory=dict)
    protected_targets: tuple[str, ...] = ()
    _splits: dict[str, Split] = field(default_factory=dict)
    _pretrain_splits: dict[str, Split] = field(default_factory=dict)

    @staticmethod
    def file_key(path: Path) -> str:
        """A content hash of the data file (a folder hashes its listing), so splits follow the data."""
        path = Path(path)
        if path.is_dir():
            listing = "\n".join(sorted(f"{p.name}:{p.stat().st_size}" for p in path.iterdir()))
            return hashlib.sha1(listing.encode()).hexdigest()[:16]
        stat = path.stat()
        return _file_digest(str(path.resolve()), stat.st_size, stat.st_mtime_ns)

    @classmethod
    def load(
        cls, manifest: Manifest, data_path: Path, cache_dir: Path | None = None, progress: bool = True
    ) -> "TaskData":
        sources = {e.source for e in manifest.experiments}
        targets = {e.target for e in manifest.experiments}
        extra = set(manifest.data.protected_targets)
        cache_dir = Path(cache_dir) if cache_dir is not None else manifest.resolve(manifest.data.cache_dir)
        # An unknown name among the protected_targets fails here, naming it and the file's properties.
        loaded = load_with_protected(
            data_path,
            sorted(sources | targets | extra),
            params=GraphParams(max_nbr=manifest.data.max_nbr),
            cache_dir=cache_dir,
            on_error=manifest.data.on_error,
            progress=progress,
        )
        split_dir = cache_dir / "splits" / cls.file_key(data_path)
        return cls(
            loaded, split_dir, manifest.data.split_seed, task_targets(manifest), tuple(manifest.data.protected_targets)
        )

    # --- splits --------------------------------------------------------------------------------
    def split(self, prop: str) -> Split:
        """The 80/10/10 split over the materials that have ``prop``, written once and reused."""
        return property_split(self.loaded, prop, self.split_dir, self.split_seed, self._splits)

    def protected(self, prop: str) -> tuple[str, ...]:
        """The properties whose val/test materials a pre-training on ``prop`` must not see."""
        return protected_properties(
            self.loaded, prop, self.targets_by_source.get(prop, ()), self.protected_targets
        )

    def protected_ids(self, prop: str) -> list[str]:
        """The validation and test materials of the properties protected from a pre-training on
        ``prop``, sorted: none of them may be in its pool."""
        ids: set[str] = set()
        for other in set(self.protected(prop)) - {prop}:
            split = self.split(other)
            ids.update(split.val, split.test)
        return sorted(ids)

    def pretrain_split(self, prop: str) -> Split:
        """The split of a pre-training property without any val/test material of a protected property
        (the rule of ``cgat_dgl.data.leakage``, shared with ``cgat compare``)."""
        if prop not in self._pretrain_splits:
            self._pretrain_splits[prop] = pretrain_split(
                self.loaded, prop, self.protected(prop), self.split_dir, self.split_seed, self._splits
            )
        return self._pretrain_splits[prop]

    # --- datasets ------------------------------------------------------------------------------
    def _sets(
        self, prop: str, split: Split, size: Size, cap: int | None, eval_cap: int | None, subset_seed: int | None = None
    ):
        count = resolve_size(size, len(split.train), cap)
        order_seed = self.split_seed if subset_seed is None else subset_seed
        train_ids = nested_subsets(split.train, [count], seed=order_seed)[count]
        val_ids = evaluation_subset(split.val, eval_cap, self.split_seed)
        test_ids = evaluation_subset(split.test, eval_cap, self.split_seed)
        return (
            self.loaded.dataset(prop, train_ids),
            self.loaded.dataset(prop, val_ids),
            self.loaded.dataset(prop, test_ids),
        )

    def pretrain_sets(
        self, prop: str, size: Size, cap: int | None, eval_cap: int | None
    ) -> tuple[GraphDataset, GraphDataset, GraphDataset]:
        return self._sets(prop, self.pretrain_split(prop), size, cap, eval_cap)

    def transfer_sets(
        self, target: str, size: Size, cap: int | None, eval_cap: int | None, subset_seed: int | None = None,
        above: float | None = None,
    ) -> tuple[GraphDataset, GraphDataset, GraphDataset]:
        """Training subset, validation and test sets of a transfer task. ``subset_seed`` (a run's seed)
        orders the training set from which the nested subsets are drawn, so that seeds replicate the
        choice of training materials too; the split and the evaluation sets stay fixed. ``above``: only
        the materials of each part whose target value is above it."""
        split = self.split(target)
        if above is not None:
            values = self.loaded.targets[target]
            split = Split(*(tuple(i for i in part if values[i] > above) for part in (split.train, split.val, split.test)))
            if min(split.sizes()) == 0:
                raise ValueError(f"{target} above {above}: {split.sizes()} train/val/test materials; each part needs one")
        return self._sets(target, split, size, cap, eval_cap, subset_seed)

    def resolved_pretrain_size(self, spec: PretrainRun) -> int:
        return resolve_size(spec.size, len(self.pretrain_split(spec.prop).train), spec.cap)
