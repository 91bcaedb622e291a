"""On-disk cache of crystal graphs, keyed by structure fingerprint.

Layout: ``<root>/v<FORMAT_VERSION>-<GraphParams.key()>[-<numerics>]/pack-*.npz``. The folder fixes
the graph parameters, the format and, where numpy and OpenBLAS run the host's own code rather than
the portable settings (``cgat_dgl.numerics``), which code that was (their rounding changes the
distances); inside, every pack holds many graphs as concatenated arrays with offsets,
plus the structures that failed to build with their reason. A build writes new packs and never
rewrites old ones; a pack appears only by an atomic rename, so a killed build leaves no partial pack.
Loading reads every pack once and hands out graphs as views into the packed arrays.

Integrity: every pack holds a ``checksum`` array, a SHA-256 over the names, dtypes, shapes and bytes
of all its other arrays. It lives inside the pack, so the pack and its digest appear together by the
same atomic rename (no sidecar that a killed write could leave stale or missing). A pack whose
digest does not match, that is no readable zip, lacks arrays or has inconsistent offsets is damaged:
a warning names it and the problem, it is renamed to ``*.npz.damaged`` (kept for inspection, never
read again) and none of its graphs is used, so the builder builds its structures again. Packs from
before the checksum are read unverified (listed in ``GraphCache.unverified``) and get a checksum
when packs are next merged. Verifying costs one SHA-256 pass over the loaded arrays (about 0.15 s
for the 200 MB of the 36,737 shared structures, with SHA-NI).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from cgat_dgl.atomic import atomic_write, remove_abandoned_temps
from cgat_dgl.graphs.crystal_graph import CrystalGraph
from cgat_dgl.graphs.neighbors import GraphParams

log = logging.getLogger(__name__)

# Bump when the content or layout of a cached graph changes: every cache is then rebuilt. (2: built
# under the portable numpy and OpenBLAS settings.)
FORMAT_VERSION = 2
# Packs are merged into one when there are more than this many (each build run adds some).
MAX_PACKS = 8
# The array holding a pack's digest, "sha256:<hex>"; packs written before it have none.
CHECKSUM = "checksum"
# What a damaged pack is renamed to (its name plus this), out of the "pack-*.npz" glob.
DAMAGED_SUFFIX = ".damaged"

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


_FAILURE_ARRAYS = ("failed_keys", "failed_reasons", "failed_details")
REQUIRED_ARRAYS: frozenset[str] = frozenset(
    {"keys", *_FAILURE_ARRAYS, *(name for offsets, members in _GROUPS for name in (offsets, *(m[0] for m in members)))}
)


@dataclass(frozen=True)
class CachedFailure:
    reason: str
    detail: str


class DamagedPackError(ValueError):
    """A pack file that must not be used: unreadable, incomplete, inconsistent or failing its checksum."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class CacheDamageWarning(UserWarning):
    """Issued for each damaged pack found while loading (a category of its own, so it can be made an error)."""


def arrays_checksum(arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over every array but the checksum, in name order: name, dtype, shape, then the bytes.

    Computed over the arrays rather than the file so that it can be checked on what was loaded, with
    no second read, and stored in the same file.
    """
    digest = hashlib.sha256()
    for name in sorted(arrays):
        if name == CHECKSUM:
            continue
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}\0{array.dtype.str}\0{array.shape}\0".encode())
        digest.update(array.reshape(-1).view(np.uint8))
    return "sha256:" + digest.hexdigest()


def check_pack_arrays(arrays: Mapping[str, np.ndarray]) -> str | None:
    """What is wrong with a pack's arrays (missing, inconsistent offsets, checksum mismatch), or None.

    Offsets are checked in every pack, so that even a pack without a checksum cannot hand out slices
    beyond its arrays.
    """
    missing = sorted(REQUIRED_ARRAYS - set(arrays))
    if missing:
        return f"missing arrays {', '.join(missing)}"
    count = arrays["keys"].shape[0]
    for offsets_name, members in _GROUPS:
        offsets = arrays[offsets_name]
        if offsets.shape != (count + 1,):
            return f"{offsets_name} has shape {offsets.shape} for {count} graphs"
        if offsets[0] != 0 or np.any(np.diff(offsets) < 0):
            return f"{offsets_name} does not rise from 0"
        for array_name, _, _ in members:
            if arrays[array_name].shape != (int(offsets[-1]),):
                return f"{array_name} has shape {arrays[array_name].shape}, its offsets end at {int(offsets[-1])}"
    if len({arrays[name].shape for name in _FAILURE_ARRAYS}) != 1:
        return "the failure arrays differ in length"
    if CHECKSUM in arrays:
        stored = str(arrays[CHECKSUM].reshape(-1)[0]) if arrays[CHECKSUM].size == 1 else repr(arrays[CHECKSUM])
        actual = arrays_checksum(arrays)
        if stored != actual:
            return f"checksum mismatch: stored {stored[:20]}..., computed {actual[:20]}..."
    return None


class Pack:
    """The arrays of one pack file, with per-graph slices."""

    def __init__(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.keys: list[str] = arrays["keys"].tolist()
        self.verified = CHECKSUM in arrays
        self.arrays = {name: arrays[name] for name in arrays if name not in ("keys", CHECKSUM)}
        self._offsets = {name: arrays[name].tolist() for name, _ in _GROUPS}
        self.failed_keys: list[str] = arrays["failed_keys"].tolist()
        self.failed_reasons: list[str] = arrays["failed_reasons"].tolist()
        self.failed_details: list[str] = arrays["failed_details"].tolist()

    @classmethod
    def read(cls, path: Path) -> "Pack":
        """Read and check a pack; DamagedPackError when it must not be used, OSError when it cannot be opened."""
        with open(path, "rb") as stream:  # a vanished or forbidden file is the file system's matter
            try:
                with np.load(stream, allow_pickle=False) as data:
                    arrays = {name: data[name] for name in data.files}
            except MemoryError:
                raise
            except Exception as error:  # noqa: BLE001 - whatever a damaged zip or npy header raises
                # zipfile checks each member's CRC-32 as it reads it; numpy's header parsing raises
                # ValueError; a damaged directory can send a seek astray (OSError) or a name lookup (KeyError).
                raise DamagedPackError(path, f"unreadable ({type(error).__name__}: {error})") from error
        problem = check_pack_arrays(arrays)
        if problem is not None:
            raise DamagedPackError(path, problem)
        return cls(arrays)

    def graph(self, position: int, graph_id: str) -> CrystalGraph:
        fields: dict[str, np.ndarray] = {}
        for offsets_name, members in _GROUPS:
            offsets = self._offsets[offsets_name]
            start, stop = offsets[position], offsets[position + 1]
            for array_name, field_name, _ in members:
                fields[field_name] = self.arrays[array_name][start:stop]
        return CrystalGraph(id=graph_id, **fields)


def pack_arrays(graphs: Mapping[str, CrystalGraph], failures: Mapping[str, CachedFailure]) -> dict[str, np.ndarray]:
    """Concatenate graphs (by key) and failures into the arrays of one pack, with its checksum."""
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
    arrays[CHECKSUM] = np.asarray(arrays_checksum(arrays), dtype=np.str_)
    return arrays


def _numerics_suffix() -> str:
    """Nothing under the portable settings; else the host's numpy and OpenBLAS code, as a digest."""
    from cgat_dgl import numerics

    if numerics.portable():
        return ""
    host = f"{numerics.cpu_model()}:{numerics.numpy_simd()}:{numerics.openblas_core()}"
    return "-host-" + hashlib.sha256(host.encode()).hexdigest()[:12]


class GraphCache:
    """Graphs and build failures of one (graph parameters, format version), stored under ``root``."""

    def __init__(self, root: Path | str, params: GraphParams, format_version: int | None = None) -> None:
        self.params = params
        self.format_version = FORMAT_VERSION if format_version is None else format_version
        self.directory = Path(root) / f"v{self.format_version}-{params.key()}{_numerics_suffix()}"
        self._packs: list[Pack] = []
        self._graph_index: dict[str, tuple[int, int]] = {}
        self._failures: dict[str, CachedFailure] = {}
        self._loaded = False
        # Filled by load(): packs read without a checksum (older), and damaged packs moved aside.
        self.unverified: list[Path] = []
        self.damaged: list[DamagedPackError] = []

    def pack_paths(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(self.directory.glob("pack-*.npz"))

    def load(self) -> None:
        """Read every pack; later packs win where a key appears twice.

        A damaged pack is reported, moved aside and left out: what it held is then simply not cached,
        and graphs_for_records builds it again.
        """
        self._packs, self._graph_index, self._failures = [], {}, {}
        self.unverified, self.damaged = [], []
        if self.directory.is_dir():
            remove_abandoned_temps(self.directory)  # packs whose writer was killed
        for path in self.pack_paths():
            try:
                pack = Pack.read(path)
            except DamagedPackError as error:
                self.damaged.append(error)
                self._move_aside(error)
                continue
            except OSError as error:
                # A vanished (merged by another process) or unreadable file: left in place, not used.
                warnings.warn(f"skipping unreadable graph cache pack {path}: {error}", stacklevel=2)
                continue
            if not pack.verified:
                self.unverified.append(path)
            index = len(self._packs)
            self._packs.append(pack)
            for position, key in enumerate(pack.keys):
                self._graph_index[key] = (index, position)
                self._failures.pop(key, None)
            for key, reason, detail in zip(pack.failed_keys, pack.failed_reasons, pack.failed_details):
                self._failures[key] = CachedFailure(reason, detail)
                self._graph_index.pop(key, None)
        self._loaded = True
        if self._packs or self.damaged:
            # The run's log then says whether what it trains on was verified.
            log.info(
                "graph cache %s: %d graphs and %d failures from %d packs (%d verified by checksum, %d written "
                "before checksums); %d damaged packs moved aside",
                self.directory,
                len(self._graph_index),
                len(self._failures),
                len(self._packs),
                len(self._packs) - len(self.unverified),
                len(self.unverified),
                len(self.damaged),
            )

    @staticmethod
    def _move_aside(error: DamagedPackError) -> None:
        aside = error.path.with_name(error.path.name + DAMAGED_SUFFIX)
        try:
            os.replace(error.path, aside)
            where = f"moved aside to {aside.name}"
        except OSError as move_error:
            where = f"could not be moved aside ({move_error}); it is skipped"
        warnings.warn(
            f"damaged graph cache pack {error.path}: {error.problem}; {where}, and the structures it held "
            "will be built again",
            CacheDamageWarning,
            stacklevel=3,
        )

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
