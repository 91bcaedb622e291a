"""Nearest-neighbour lists and shell ranks of a periodic crystal.

The rule is the reference CGAT one: every site lists its ``max_nbr`` nearest neighbours (periodic
images included, the site itself excluded), sorted by distance, and each listed neighbour gets the
rank of its distance shell: 1 for the nearest, +1 whenever a neighbour is farther than the previous
one by more than ``rank_tol``. The reference searched a fixed 18 Å sphere and dropped structures
with a sparser site; here the search radius starts from a density estimate and grows until every
site has ``max_nbr`` neighbours, so no structure is dropped and the search stays small.

``naive_reference_edges`` is the reference procedure itself (all neighbours within 18 Å as
pymatgen objects, sorted per site in Python), kept to check the fast path and to benchmark it.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass

import numpy as np
from pymatgen.core import Structure

EdgeArrays = tuple[np.ndarray, np.ndarray, np.ndarray]  # src, dst, rank

REFERENCE_RADIUS = 18.0
# A periodic crystal always reaches max_nbr neighbours eventually; this only stops a structure
# without periodicity (or with absurd cell vectors) from looping forever.
MAX_RADIUS = 1000.0


@dataclass(frozen=True)
class GraphParams:
    """What determines a crystal graph; part of the graph cache key."""

    max_nbr: int = 24
    rank_tol: float = 1e-8
    initial_radius: float | None = None  # None: estimated from the density of each structure
    radius_growth: float = 1.3

    def __post_init__(self) -> None:
        if self.max_nbr < 1:
            raise ValueError(f"max_nbr must be positive, got {self.max_nbr}")
        if self.rank_tol < 0:
            raise ValueError(f"rank_tol must be >= 0, got {self.rank_tol}")
        if self.initial_radius is not None and self.initial_radius <= 0:
            raise ValueError(f"initial_radius must be positive, got {self.initial_radius}")
        if self.radius_growth <= 1:
            raise ValueError(f"radius_growth must be > 1, got {self.radius_growth}")

    def key(self) -> str:
        """A stable, file-name-safe string naming these parameters."""
        parts = []
        for name, value in sorted(asdict(self).items()):
            text = "auto" if value is None else repr(value)
            parts.append(f"{name}={text}")
        return "_".join(parts).replace("+", "")


@dataclass(frozen=True)
class NeighborTable:
    """Edges sorted by (src, distance), ``max_nbr`` per site, with the distances kept."""

    src: np.ndarray  # (E,) int32
    dst: np.ndarray  # (E,) int32
    rank: np.ndarray  # (E,) int8
    distance: np.ndarray  # (E,) float64
    radius: float  # the search radius that was finally used

    def edges(self) -> EdgeArrays:
        return self.src, self.dst, self.rank


def estimate_radius(structure: Structure, max_nbr: int) -> float:
    """A radius whose sphere holds about 1.5 * max_nbr atoms at the crystal's mean density."""
    volume_per_atom = structure.volume / len(structure)
    return (3.0 * 1.5 * (max_nbr + 1) * volume_per_atom / (4.0 * math.pi)) ** (1.0 / 3.0)


def shell_ranks(distances: np.ndarray, tol: float) -> np.ndarray:
    """Shell ranks of rows of ascending distances: 1, then +1 at every step larger than ``tol``."""
    steps = np.diff(distances, axis=-1) > tol
    ranks = np.ones(distances.shape, dtype=np.int64)
    ranks[..., 1:] += np.cumsum(steps, axis=-1)
    return ranks


def nearest_neighbor_table(
    structure: Structure,
    max_nbr: int = 24,
    tol: float = 1e-8,
    initial_radius: float | None = None,
    growth: float = 1.3,
) -> NeighborTable:
    """The ``max_nbr`` nearest neighbours of every site, growing the search radius as needed."""
    n_sites = len(structure)
    if n_sites == 0:
        raise ValueError("structure has no sites")
    if max_nbr > 127:
        raise ValueError(f"max_nbr={max_nbr} does not fit the int8 edge ranks")
    radius = initial_radius if initial_radius is not None else estimate_radius(structure, max_nbr)
    while True:
        center, point, _, dist = structure.get_neighbor_list(radius)
        counts = np.bincount(center, minlength=n_sites)
        if counts.min() >= max_nbr:
            break
        if radius > MAX_RADIUS:
            raise ValueError(
                f"fewer than {max_nbr} neighbours within {radius:.0f} Å for some site "
                f"(is the structure periodic? pbc={structure.pbc})"
            )
        radius *= growth

    # Stable sort by distance within each center; equidistant neighbours keep pymatgen's order.
    order = np.lexsort((dist, center))
    starts = np.zeros(n_sites, dtype=np.int64)
    np.cumsum(counts[:-1], out=starts[1:])
    picked = order[(starts[:, None] + np.arange(max_nbr)[None, :]).ravel()]
    dist_rows = dist[picked].reshape(n_sites, max_nbr)
    return NeighborTable(
        src=np.repeat(np.arange(n_sites, dtype=np.int32), max_nbr),
        dst=point[picked].astype(np.int32),
        rank=shell_ranks(dist_rows, tol).ravel().astype(np.int8),
        distance=dist_rows.ravel(),
        radius=float(radius),
    )


def nearest_neighbor_edges(structure: Structure, max_nbr: int = 24, tol: float = 1e-8) -> EdgeArrays:
    """Edges (src = listing site, dst = listed neighbour, rank = shell rank) of a crystal."""
    return nearest_neighbor_table(structure, max_nbr, tol).edges()


@dataclass(frozen=True)
class ReferenceNeighbors:
    """The reference result, plus what is needed to judge ties at the cut-off.

    ``last_shell_candidates[i]`` counts every neighbour of site ``i`` within the search sphere that
    belongs to the last kept shell, including those that fell beyond ``max_nbr``: any of them may be
    listed by another implementation that orders equidistant neighbours differently.
    """

    table: NeighborTable
    last_shell_candidates: list[Counter[int]]


def naive_reference_neighbors(
    structure: Structure, max_nbr: int = 24, radius: float = REFERENCE_RADIUS, tol: float = 1e-8
) -> ReferenceNeighbors:
    """The reference procedure: all neighbours within ``radius`` as objects, sorted per site."""
    src: list[int] = []
    dst: list[int] = []
    rank: list[int] = []
    distance: list[float] = []
    candidates: list[Counter[int]] = []
    for site_index, neighbors in enumerate(structure.get_all_neighbors(radius)):
        ordered = sorted(neighbors, key=lambda nbr: nbr.nn_distance)
        if len(ordered) < max_nbr:
            raise ValueError(
                f"site {site_index} has {len(ordered)} < {max_nbr} neighbours within {radius} Å"
            )
        shell = 1
        for k, nbr in enumerate(ordered[:max_nbr]):
            if k > 0 and nbr.nn_distance - ordered[k - 1].nn_distance > tol:
                shell += 1
            src.append(site_index)
            dst.append(nbr.index)
            rank.append(shell)
            distance.append(nbr.nn_distance)
        # Walk the last kept shell both ways along the sorted list.
        first = max_nbr - 1
        while first > 0 and ordered[first].nn_distance - ordered[first - 1].nn_distance <= tol:
            first -= 1
        last = max_nbr - 1
        while last + 1 < len(ordered) and ordered[last + 1].nn_distance - ordered[last].nn_distance <= tol:
            last += 1
        candidates.append(Counter(nbr.index for nbr in ordered[first : last + 1]))
    table = NeighborTable(
        src=np.asarray(src, dtype=np.int32),
        dst=np.asarray(dst, dtype=np.int32),
        rank=np.asarray(rank, dtype=np.int8),
        distance=np.asarray(distance, dtype=np.float64),
        radius=radius,
    )
    return ReferenceNeighbors(table=table, last_shell_candidates=candidates)


def naive_reference_edges(
    structure: Structure, max_nbr: int = 24, radius: float = REFERENCE_RADIUS
) -> EdgeArrays:
    """The reference edges (raises ValueError where the reference would drop the structure)."""
    return naive_reference_neighbors(structure, max_nbr, radius).table.edges()


def edge_differences(
    ours: NeighborTable, reference: ReferenceNeighbors, max_nbr: int = 24, distance_tol: float = 1e-6
) -> list[str]:
    """Where two neighbour tables disagree beyond swapping equidistant neighbours at the cut-off.

    Accepted: the same rank sequence per site, the same neighbour multiset in every shell but the
    last kept one, and in that last shell neighbours drawn from its candidates (same count, same
    distances). Anything else is reported, one message per offending site.
    """
    ref = reference.table
    problems: list[str] = []
    if ours.src.shape != ref.src.shape:
        return [f"edge counts differ: {ours.src.shape[0]} vs {ref.src.shape[0]}"]
    n_sites = ours.src.shape[0] // max_nbr
    for name, a, b in (("src", ours.src, ref.src), ("rank", ours.rank, ref.rank)):
        rows = np.nonzero((a.reshape(n_sites, max_nbr) != b.reshape(n_sites, max_nbr)).any(axis=1))[0]
        problems += [f"site {i}: {name} differs" for i in rows]
    far = np.abs(ours.distance - ref.distance).reshape(n_sites, max_nbr) > distance_tol
    problems += [f"site {i}: distances differ" for i in np.nonzero(far.any(axis=1))[0]]
    if problems:
        return problems
    ranks = ours.rank.reshape(n_sites, max_nbr)
    our_dst = ours.dst.reshape(n_sites, max_nbr)
    ref_dst = ref.dst.reshape(n_sites, max_nbr)
    for i in range(n_sites):
        inner = ranks[i] < ranks[i, -1]
        if Counter(our_dst[i][inner].tolist()) != Counter(ref_dst[i][inner].tolist()):
            problems.append(f"site {i}: neighbours of a complete shell differ")
            continue
        outer = Counter(our_dst[i][~inner].tolist())
        if outer - reference.last_shell_candidates[i]:
            problems.append(f"site {i}: last-shell neighbours are not at the shell's distance")
    return problems
