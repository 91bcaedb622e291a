"""The fast neighbour rule against the reference procedure, radius growth and the tie check."""

from __future__ import annotations

import itertools
import warnings
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from cgat_dgl.graphs.neighbors import (
    GraphParams,
    NeighborTable,
    edge_differences,
    estimate_radius,
    naive_reference_edges,
    naive_reference_neighbors,
    nearest_neighbor_edges,
    nearest_neighbor_table,
    shell_ranks,
)
from tests.graph_test_data import rows_by_size


def parse(cif: str) -> Structure:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Structure.from_str(cif, fmt="cif")


def brute_force_distances(structure: Structure, site: int, reach: int) -> np.ndarray:
    """Every distance from ``site`` to any site image within ``reach`` cells, ascending, self excluded."""
    shifts = np.array(list(itertools.product(range(-reach, reach + 1), repeat=3)), dtype=float)
    frac = structure.frac_coords[None, :, :] + shifts[:, None, :]
    cart = frac.reshape(-1, 3) @ structure.lattice.matrix
    distances = np.linalg.norm(cart - structure.cart_coords[site], axis=1)
    return np.sort(distances[distances > 1e-8])


@pytest.mark.slow
def test_fast_rule_equals_reference_on_real_structures(shared_data_path: Path) -> None:
    rows = rows_by_size(shared_data_path, 30)
    sizes = [row["natoms"] for row in rows]
    assert min(sizes) == 1 and max(sizes) >= 150
    for row in rows:
        structure = parse(row["cif"])
        ours = nearest_neighbor_table(structure)
        reference = naive_reference_neighbors(structure)
        assert edge_differences(ours, reference) == [], row["id"]
        src, dst, rank = nearest_neighbor_edges(structure)
        assert src.dtype == np.int32 and dst.dtype == np.int32 and rank.dtype == np.int8
        assert np.array_equal(np.bincount(src), np.full(len(structure), 24))
        assert rank.min() == 1 and rank.max() <= 24


def test_one_atom_cell_lists_its_own_images() -> None:
    # bcc Cs, a 1-atom cell: all 24 neighbours are images of site 0 (8 + 6 + 10 of the third shell's 12).
    structure = Structure(Lattice.cubic(6.05), ["Cs", "Cs"], [[0, 0, 0], [0.5, 0.5, 0.5]]).get_primitive_structure()
    assert len(structure) == 1
    src, dst, rank = nearest_neighbor_edges(structure)
    assert np.all(src == 0) and np.all(dst == 0)
    assert rank.tolist() == [1] * 8 + [2] * 6 + [3] * 10
    ref_src, ref_dst, ref_rank = naive_reference_edges(structure)
    assert np.array_equal(rank, ref_rank) and np.array_equal(dst, ref_dst)


def test_radius_grows_past_the_reference_sphere_for_a_sparse_cell() -> None:
    # One atom in a 30 Å box: nothing within 18 Å, so the reference drops it; we grow the sphere.
    structure = Structure(Lattice.cubic(30.0), ["Ar"], [[0, 0, 0]])
    with pytest.raises(ValueError, match="neighbours within 18"):
        naive_reference_edges(structure)
    table = nearest_neighbor_table(structure)
    assert table.radius > 18.0
    expected = brute_force_distances(structure, 0, reach=3)[:24]
    np.testing.assert_allclose(table.distance, expected, rtol=0, atol=1e-9)
    # 6 faces at 30 Å, 12 edges at 30*sqrt(2), then 6 of the 8 corners at 30*sqrt(3).
    assert table.rank.tolist() == [1] * 6 + [2] * 12 + [3] * 6


def test_radius_grows_for_a_chain_beyond_the_density_estimate() -> None:
    # Atoms 2.5 Å apart along c, 31 Å between chains: the 24 nearest lie along the chain up to
    # 30 Å, beyond both the reference's 18 Å and the estimate from the mean density.
    structure = Structure(Lattice.tetragonal(31.0, 2.5), ["Cu"], [[0, 0, 0]])
    assert estimate_radius(structure, 24) < 30.0
    with pytest.raises(ValueError):
        naive_reference_edges(structure)
    table = nearest_neighbor_table(structure)
    assert table.radius >= 30.0
    np.testing.assert_allclose(table.distance, brute_force_distances(structure, 0, reach=12)[:24], atol=1e-9)
    np.testing.assert_allclose(table.distance, np.repeat(2.5 * np.arange(1, 13), 2), atol=1e-9)
    assert table.rank.tolist() == np.repeat(np.arange(1, 13), 2).tolist()


def test_layered_cell_matches_brute_force_and_reference() -> None:
    lattice = Lattice.from_parameters(3.2, 3.2, 25.0, 90, 90, 120)
    structure = Structure(lattice, ["Mo", "S"], [[0, 0, 0.5], [1 / 3, 2 / 3, 0.56]])
    table = nearest_neighbor_table(structure)
    for site in range(len(structure)):
        row = table.distance[table.src == site]
        np.testing.assert_allclose(row, brute_force_distances(structure, site, reach=4)[:24], atol=1e-9)
        np.testing.assert_array_equal(table.rank[table.src == site], shell_ranks(row, 1e-8))
    assert edge_differences(table, naive_reference_neighbors(structure)) == []


def test_too_small_initial_radius_gives_the_same_graph(shared_data_path: Path) -> None:
    structure = parse(rows_by_size(shared_data_path, 12)[6]["cif"])
    small = nearest_neighbor_table(structure, initial_radius=0.5)
    assert small.radius > 0.5
    assert edge_differences(small, naive_reference_neighbors(structure)) == []


def test_non_periodic_structure_is_refused_not_looped() -> None:
    lattice = Lattice(np.eye(3) * 10.0, pbc=(False, False, False))
    structure = Structure(lattice, ["H", "H"], [[0, 0, 0], [0.07, 0, 0]])
    with pytest.raises(ValueError, match="fewer than 24 neighbours"):
        nearest_neighbor_table(structure)


def test_shell_ranks_follow_the_tolerance() -> None:
    distances = np.array([1.0, 1.0 + 5e-9, 1.0 + 2e-8, 2.0, 2.0, 3.0])
    assert shell_ranks(distances, 1e-8).tolist() == [1, 1, 2, 3, 3, 4]
    assert shell_ranks(distances, 0.0).tolist() == [1, 2, 3, 4, 4, 5]


def rock_salt() -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def test_difference_check_accepts_only_swaps_of_equidistant_neighbours() -> None:
    # Na in the conventional rock-salt cell: 6 Cl, 12 Na, then 6 of the 8 Cl of the third shell.
    structure = rock_salt()
    reference = naive_reference_neighbors(structure)
    ours = nearest_neighbor_table(structure)
    assert edge_differences(ours, reference) == []
    na_sites = [i for i, site in enumerate(structure) if site.specie.symbol == "Na"]
    center = na_sites[0]
    first, last = center * 24, center * 24 + 23
    assert ours.rank[first : last + 1].tolist() == [1] * 6 + [2] * 12 + [3] * 6
    chosen = Counter(ours.dst[last - 5 : last + 1].tolist())
    unused = reference.last_shell_candidates[center] - chosen
    assert unused, "the third shell has candidates beyond the 24th neighbour"

    def with_dst(position: int, new_dst: int) -> NeighborTable:
        dst = ours.dst.copy()
        dst[position] = new_dst
        return replace(ours, dst=dst)

    # Another Cl of the same last shell: a legitimate tie, accepted.
    assert edge_differences(with_dst(last, next(iter(unused))), reference) == []
    # A Na is not at the last shell's distance.
    assert edge_differences(with_dst(last, na_sites[1]), reference) != []
    # A complete shell must hold exactly the same neighbours.
    assert ours.dst[first] not in na_sites
    assert edge_differences(with_dst(first, na_sites[1]), reference) != []
    rank = ours.rank.copy()
    rank[last] = 4
    assert edge_differences(replace(ours, rank=rank), reference) != []
    distance = ours.distance.copy()
    distance[last] += 1e-3
    assert edge_differences(replace(ours, distance=distance), reference) != []


def test_graph_params_key_is_stable_and_distinct() -> None:
    assert GraphParams().key() == GraphParams().key()
    keys = {
        GraphParams().key(),
        GraphParams(max_nbr=12).key(),
        GraphParams(rank_tol=1e-6).key(),
        GraphParams(initial_radius=5.0).key(),
    }
    assert len(keys) == 4
    assert all("/" not in key and " " not in key for key in keys)
    assert hash(GraphParams()) == hash(GraphParams())
    with pytest.raises(ValueError):
        GraphParams(max_nbr=0)
