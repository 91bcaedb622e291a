"""On-disk cache of crystal graphs, keyed by structure fingerprint.

Layout: ``<root>/v<FORMAT_VERSION>-<GraphParams.key()>/pack-*.npz``. The folder fixes the graph
parameters and the format; inside, every pack holds many graphs as concatenated arrays with offsets,
plus the structures that failed to build with their reason. A build writes new packs and never
rewrites old ones; a pack appears only by an atomic rename, so a killed build leaves no partial pack.
Loading reads every pack once and hands out graphs as views into the packed arrays.
"""

from __future__ import annotations

import json
import os
import time
import warnings
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from cgat_dgl.atomic import atomic_write
from cgat_dgl.graphs.crystal_graph import CrystalGraph
from cgat_dgl.graphs.neighbors import GraphParams

# Bump when the content or layout of a cached graph changes: every cache is then rebuilt.
FORMAT_VERSION = 1
# Packs are merged into one when there are more than this many (each build run adds some).
MAX_PACKS = 8

# (offsets name, [(array name, CrystalGraph field, dtype), ...])
_GROUPS: tuple[tuple[str, tuple[tuple[str, str, type], ...]], ...] = (
    ("atom_offsets", (("atomic_numbers", "atomic_numbers", np.int16),)),
    (
        "edge_offsets",
        (
            ("edge_src", "edge_src", np.int32),
            ("edge_dst", "edge_dst", np.int32),
            ("edge_rank", "edge_rank", np.int8),
        ),
    ),
    (
        "comp_offsets",
        (("comp_elements", "comp_elements", np.int16), ("comp_fractions", "comp_fractions", np.float32)),
    ),
    ("comp_edge_offsets", (("comp_src", "comp_src", np.int32), ("comp_dst", "comp_dst", np.int32))),
)


@dataclass(frozen=True)
class CachedFailure:
    reason: str
    detail: str


class Pack:
    """The arrays of one pack file, with per-graph slices."""

    def __init__(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.keys: list[str] = arrays["keys"].tolist()
        self.arrays = {name: arrays[name] for name in arrays if name not in ("keys",)}
        self._offsets = {name: arrays[name].tolist() for name, _ in _GROUPS}
        self.failed_keys: list[str] = arrays["failed_keys"].tolist()
        self.failed_reasons: list[str] = arrays["failed_reasons"].tolist()
        self.failed_details: list[str] = arrays["failed_details"].tolist()

    @classmethod
    def read(cls, path: Path) -> "Pack":
        with np.load(path, allow_pickle=False) as data:
            return cls({name: data[name] for name in data.files})

    def graph(self, position: int, graph_id: str) -> CrystalGraph:
        fields: dict[str, np.ndarray] = {}
        for offsets_name, members in _GROUPS:
            offsets = self._offsets[offsets_name]
            start, stop = offsets[position], offsets[position + 1]
            for array_name, field_name, _ in members:
                fields[field_name] = self.arrays[array_name][start:stop]
        return CrystalGraph(id=graph_id, **fields)


def pack_arrays(graphs: Mapping[str, CrystalGraph], failures: Mapping[str, CachedFailure]) -> dict[str, np.ndarray]:
    """Concatenate graphs (by key) and failures into the arrays of one pack."""
    keys = list(graphs)
    values = [graphs[key] for key in keys]
    arrays: dict[str, np.ndarray] = {"keys": np.asarray(keys, dtype=np.str_).reshape(len(keys))}
    for offsets_name, members in _GROUPS:
        first_field = members[0][1]
        sizes = np.fromiter((getattr(g, first_field).shape[0] for g in values), dtype=np.int64, count=len(values))
        offsets = np.zeros(len(values) + 1, dtype=np.int64)
        np.cumsum(sizes, out=offsets[1:])
        arrays[offsets_name] = offsets
        for array_name, field_name, dtype in members:
            parts = [np.asarray(getattr(g, field_name), dtype=dtype) for g in values]
            arrays[array_name] = np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)
    failed = list(failures)
    arrays["failed_keys"] = np.asarray(failed, dtype=np.str_).reshape(len(failed))
    arrays["failed_reasons"] = np.asarray([failures[k].reason for k in failed], dtype=np.str_).reshape(len(failed))
    arrays["failed_details"] = np.asarray([failures[k].detail for k in failed], dtype=np.str_).reshape(len(failed))
    return arrays


class GraphCache:
    """Graphs and build failures of one (graph parameters, format version), stored under ``root``."""

    def __init__(self, root: Path | str, params: GraphParams, format_version: int | None = None) -> None:
        self.params = params
        self.format_version = FORMAT_VERSION if format_version is None else format_version
        self.directory = Path(root) / f"v{self.format_version}-{params.key()}"
        self._packs: list[Pack] = []
        self._graph_index: dict[str, tuple[int, int]] = {}
        self._failures: dict[str, CachedFailure] = {}
        self._loaded = False

    def pack_paths(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(self.directory.glob("pack-*.npz"))

    def load(self) -> None:
        """Read every pack; later packs win where a key appears twice."""
        self._packs, self._graph_index, self._failures = [], {}, {}
        for path in self.pack_paths():
            try:
                pack = Pack.read(path)
            except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
                # A vanished or unreadable pack only costs a rebuild of what it held.
                warnings.warn(f"skipping unreadable graph cache pack {path}: {error}", stacklevel=2)
                continue
            index = len(self._packs)
            self._packs.append(pack)
            for position, key in enumerate(pack.keys):
                self._graph_index[key] = (index, position)
                self._failures.pop(key, None)
            for key, reason, detail in zip(pack.failed_keys, pack.failed_reasons, pack.failed_details):
                self._failures[key] = CachedFailure(reason, detail)
                self._graph_index.pop(key, None)
        self._loaded = True

    def _ensure_loaded(self) -> None:
        if not self._loaded:
            self.load()

    def __len__(self) -> int:
        self._ensure_loaded()
        return len(self._graph_index) + len(self._failures)

    def has(self, key: str) -> bool:
        self._ensure_loaded()
        return key in self._graph_index or key in self._failures

    def graph(self, key: str, graph_id: str) -> CrystalGraph | None:
        """The cached graph of a structure, named ``graph_id``; None when not cached."""
        self._ensure_loaded()
        where = self._graph_index.get(key)
        if where is None:
            return None
        return self._packs[where[0]].graph(where[1], graph_id)

    def failure(self, key: str) -> CachedFailure | None:
        self._ensure_loaded()
        return self._failures.get(key)

    def add(self, graphs: Mapping[str, CrystalGraph], failures: Mapping[str, CachedFailure]) -> Path | None:
        """Write one new pack with these graphs and failures (by key), and make them available."""
        self._ensure_loaded()
        if not graphs and not failures:
            return None
        arrays = pack_arrays(graphs, failures)
        path = self._write_pack(arrays)
        index = len(self._packs)
        pack = Pack(arrays)
        self._packs.append(pack)
        for position, key in enumerate(pack.keys):
            self._graph_index[key] = (index, position)
            self._failures.pop(key, None)
        for key in failures:
            self._failures[key] = failures[key]
            self._graph_index.pop(key, None)
        if len(self._packs) > MAX_PACKS:
            self.compact()
        return path

    def compact(self) -> None:
        """Merge all packs into one (the latest entry of every key)."""
        self._ensure_loaded()
        old_paths = self.pack_paths()
        graphs = {key: self._packs[i].graph(p, key) for key, (i, p) in self._graph_index.items()}
        self._write_pack(pack_arrays(graphs, dict(self._failures)), replaces=old_paths)
        self.load()

    def _write_pack(self, arrays: Mapping[str, np.ndarray], replaces: Iterable[Path] = ()) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        params_file = self.directory / "params.json"
        if not params_file.exists():
            params_file.write_text(json.dumps({"format_version": self.format_version, **asdict(self.params)}))
        final = self.directory / f"pack-{time.time_ns():020d}-{os.getpid()}.npz"
        with atomic_write(final) as stream:
            np.savez(stream, **arrays)
        for path in replaces:
            if path != final:
                path.unlink(missing_ok=True)
        return final
