"""The data of a manifest: graphs and targets loaded once, fixed splits, nested size subsets, leakage control."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from benchmarks.manifest import Manifest, Size
from benchmarks.plan import PretrainRun, resolve_size
from cgat_dgl.data.dataset import GraphDataset, LoadedData, load_dataset
from cgat_dgl.data.splits import Split, load_or_create_split, nested_subsets, remove_leakage
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
    protected_targets: tuple[str, ...]
    _splits: dict[str, Split] = field(default_factory=dict)

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
        cache_dir = Path(cache_dir) if cache_dir is not None else manifest.resolve(manifest.data.cache_dir)
        loaded = load_dataset(
            data_path,
            sorted(sources | targets),
            params=GraphParams(max_nbr=manifest.data.max_nbr),
            cache_dir=cache_dir,
            on_error=manifest.data.on_error,
            progress=progress,
        )
        split_dir = cache_dir / "splits" / cls.file_key(data_path)
        return cls(loaded, split_dir, manifest.data.split_seed, tuple(sorted(targets)))

    # --- splits --------------------------------------------------------------------------------
    def split(self, prop: str) -> Split:
        """The 80/10/10 split over the materials that have ``prop``, written once and reused."""
        if prop not in self._splits:
            column = self.loaded.targets[prop]
            ids = sorted(column.index[column.notna()])
            path = self.split_dir / f"{prop}-seed{self.split_seed}.json"
            self._splits[prop] = load_or_create_split(path, ids, self.split_seed)
        return self._splits[prop]

    def pretrain_split(self, prop: str) -> Split:
        """The split of a pre-training property without any material of a transfer val/test set."""
        protected: set[str] = set()
        for target in self.protected_targets:
            if target != prop:
                split = self.split(target)
                protected.update(split.val)
                protected.update(split.test)
        return remove_leakage(self.split(prop), protected).split

    # --- datasets ------------------------------------------------------------------------------
    def _sets(self, prop: str, split: Split, size: Size, cap: int | None, eval_cap: int | None):
        count = resolve_size(size, len(split.train), cap)
        train_ids = nested_subsets(split.train, [count], seed=self.split_seed)[count]
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
        self, target: str, size: Size, cap: int | None, eval_cap: int | None
    ) -> tuple[GraphDataset, GraphDataset, GraphDataset]:
        return self._sets(target, self.split(target), size, cap, eval_cap)

    def resolved_pretrain_size(self, spec: PretrainRun) -> int:
        return resolve_size(spec.size, len(self.pretrain_split(spec.prop).train), spec.cap)
