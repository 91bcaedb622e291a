"""The fast P1 CIF reader against pymatgen's parser: every shared structure, the graphs, and the CIFs it must refuse."""

from __future__ import annotations

import gzip
import json
import multiprocessing
import pickle
import random
import sys
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Lattice, Species, Structure
from pymatgen.io.cif import CifWriter
from threadpoolctl import threadpool_limits

from cgat_dgl.data.p1_cif import parse_p1_cif
from cgat_dgl.data.records import DataError, MaterialRecord
from cgat_dgl.data.validation import check_structure
from cgat_dgl.graphs.build import build_crystal_graph
from cgat_dgl.graphs.neighbors import GraphParams

WORKERS = 2
GRAPH_SAMPLE = 500


def pymatgen_parse(cif: str) -> Structure:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rounding to ideal fractions, missing electronegativities
        return Structure.from_str(cif, fmt="cif")


def differences(ours: Structure, theirs: Structure, tol: float = 1e-6) -> list[str]:
    """Where the fast reader's structure differs from pymatgen's: order, species, labels, cell, coordinates."""
    if len(ours) != len(theirs):
        return [f"{len(ours)} sites, pymatgen {len(theirs)}"]
    problems = []
    if [site.species for site in ours] != [site.species for site in theirs]:
        problems.append("species differ")
    if ours.labels != theirs.labels:
        problems.append("labels differ")
    if not np.allclose(ours.lattice.matrix, theirs.lattice.matrix, rtol=0, atol=tol):
        problems.append("lattice differs")
    if not np.allclose(ours.frac_coords, theirs.frac_coords, rtol=0, atol=tol):
        problems.append("fractional coordinates differ")
    if ours.site_properties != theirs.site_properties or ours.properties != theirs.properties:
        problems.append("properties differ")
    return problems


def bit_identical(ours: Structure, theirs: Structure) -> bool:
    return (
        ours.lattice.matrix.tobytes() == theirs.lattice.matrix.tobytes()
        and ours.frac_coords.tobytes() == theirs.frac_coords.tobytes()
    )


# --- every structure of the shared file ----------------------------------------------------------------------


@dataclass
class Comparison:
    lines: int = 0  # of the whole file
    compared: int = 0
    fell_back: list[str] = field(default_factory=list)
    mismatched: dict[str, list[str]] = field(default_factory=dict)
    not_bit_identical: list[str] = field(default_factory=list)


def compare_share(task: tuple[str, int, int]) -> Comparison:
    """Both readers on the lines ``worker``, ``worker + workers``, ... of the file."""
    path, worker, workers = task
    result = Comparison()
    with threadpool_limits(limits=1, user_api="blas"), gzip.open(path, "rt", encoding="utf-8") as handle:
        for number, line in enumerate(handle):
            result.lines += 1
            if number % workers != worker:
                continue
            row = json.loads(line)
            result.compared += 1
            ours = parse_p1_cif(row["cif"])
            if ours is None:
                result.fell_back.append(row["id"])
                continue
            theirs = pymatgen_parse(row["cif"])
            problems = differences(ours, theirs)
            if problems:
                result.mismatched[row["id"]] = problems
            elif not bit_identical(ours, theirs):
                result.not_bit_identical.append(row["id"])
    return result


@pytest.mark.slow
def test_every_shared_structure_matches_pymatgen(shared_data_path: Path) -> None:
    # Forked workers start at once and need no importable test module; they run only pymatgen.
    context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    with ProcessPoolExecutor(max_workers=WORKERS, mp_context=context) as pool:
        shares = list(pool.map(compare_share, [(str(shared_data_path), w, WORKERS) for w in range(WORKERS)]))
    compared = sum(share.compared for share in shares)
    fell_back = [i for share in shares for i in share.fell_back]
    mismatched = {i: p for share in shares for i, p in share.mismatched.items()}
    not_bit_identical = [i for share in shares for i in share.not_bit_identical]
    print(f"{compared} structures compared, {len(fell_back)} fell back to pymatgen, {len(mismatched)} differ")
    assert compared == shares[0].lines > 0
    assert not mismatched, dict(list(mismatched.items())[:5])
    # All of them are pymatgen-written P1 CIFs: the fast path must take every one.
    assert not fell_back, fell_back[:5]
    # Same operations in the same order: not only within 1e-6 but to the bit.
    assert not not_bit_identical, not_bit_identical[:5]


@pytest.mark.slow
def test_graphs_of_a_sample_are_identical(shared_data_path: Path) -> None:
    with gzip.open(shared_data_path, "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    sample = random.Random(7).sample(rows, GRAPH_SAMPLE)
    params = GraphParams()
    with threadpool_limits(limits=1, user_api="blas"):
        for row in sample:
            ours = parse_p1_cif(row["cif"])
            assert ours is not None, row["id"]
            theirs = pymatgen_parse(row["cif"])
            assert ours.as_dict() == theirs.as_dict(), row["id"]  # occupancies, labels, charge, properties too
            mine = build_crystal_graph(row["id"], ours, params)
            reference = build_crystal_graph(row["id"], theirs, params)
            for name in ("atomic_numbers", "edge_src", "edge_dst", "edge_rank", "comp_elements", "comp_fractions"):
                assert np.array_equal(getattr(mine, name), getattr(reference, name)), (row["id"], name)


# --- CIFs the fast path accepts, built with pymatgen ---------------------------------------------------------


def test_wrapping_rounding_and_order_match_pymatgen() -> None:
    """Coordinates outside [0, 1) and near 1/3, 2/3; sites given out of electronegativity order."""
    structure = Structure(
        Lattice.from_parameters(4.1, 5.2, 6.3, 81.0, 97.0, 103.0),
        ["O", "Na", "Cl", "Na", "O"],
        [[-0.25, 1.25, 0.33334], [0.666661, 0.5, 1.0], [0.1, 0.2, -0.0], [0.7, 0.1, 0.9], [0.5, 0.5, 0.5]],
    )
    cif = structure.to(fmt="cif")
    ours = parse_p1_cif(cif)
    assert ours is not None
    theirs = pymatgen_parse(cif)
    assert not differences(ours, theirs) and bit_identical(ours, theirs)
    assert [site.specie.symbol for site in ours] == ["Na", "Na", "Cl", "O", "O"]
    assert ours.frac_coords[0].tolist() == [2 / 3, 0.5, 0.0]
    assert ours.frac_coords[3].tolist() == [0.75, 0.25, 1 / 3]


def test_elements_without_electronegativity_keep_pymatgens_order() -> None:
    """He, Ne, Ar and the heaviest elements have no electronegativity: pymatgen's sort is then replayed."""
    rng = random.Random(3)
    symbols = ["He", "Ar", "Ne", "Og", "Cl", "Na", "O", "Fe", "Xe", "H"]
    for _ in range(50):
        count = rng.randint(2, 10)
        species = [rng.choice(symbols) for _ in range(count)]
        coords = [[rng.random(), rng.random(), rng.random()] for _ in range(count)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cif = Structure(Lattice.cubic(7.0), species, coords).to(fmt="cif")
        ours = parse_p1_cif(cif)
        assert ours is not None
        assert not differences(ours, pymatgen_parse(cif)), species


def test_structures_behave_like_pymatgens(shared_sample_path: Path) -> None:
    """The sites are assembled without pymatgen's constructor: the result must still pickle and mutate."""
    with gzip.open(shared_sample_path, "rt", encoding="utf-8") as handle:
        cif = [json.loads(line)["cif"] for line in handle][5]
    ours, theirs = parse_p1_cif(cif), pymatgen_parse(cif)
    assert ours is not None
    copy = pickle.loads(pickle.dumps(ours))
    assert copy == theirs and copy.labels == theirs.labels
    for structure in (ours, theirs):
        structure.replace(0, "Li")
        structure.append("O", [0.11, 0.22, 0.33])
        structure.sort()
    assert not differences(ours, theirs)
    # Sites of one element share a Composition, as in pymatgen's parser: changing one site leaves the rest.
    again = parse_p1_cif(cif)
    assert again is not None and not differences(again, pymatgen_parse(cif))


def test_comments_and_blank_lines_are_skipped(shared_sample_path: Path) -> None:
    with gzip.open(shared_sample_path, "rt", encoding="utf-8") as handle:
        cif = json.loads(handle.readline())["cif"]
    noisy = cif.replace("loop_\n", "\n# a comment\n   \nloop_\n", 1)
    ours = parse_p1_cif(noisy)
    assert ours is not None and not differences(ours, pymatgen_parse(cif))


# --- CIFs the fast path refuses ------------------------------------------------------------------------------


def rock_salt() -> Structure:
    return Structure(Lattice.cubic(5.6), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def without_occupancy(cif: str) -> str:
    """The CIF without its _atom_site_occupancy column."""
    head, rows = cif.split(" _atom_site_occupancy\n")
    return head + "".join(row.rsplit(None, 1)[0] + "\n" for row in rows.splitlines())


def fallback_cases() -> dict[str, str]:
    p1 = rock_salt().to(fmt="cif")
    oxidised = rock_salt()
    oxidised.add_oxidation_state_by_element({"Na": 1, "Cl": -1})
    magnetic = Structure(Lattice.cubic(2.9), ["Fe"], [[0, 0, 0]], site_properties={"magmom": [2.2]})
    return {
        "space_group": str(CifWriter(rock_salt(), symprec=0.1)),
        "two_symmetry_operations": p1.replace("  1  'x, y, z'\n", "  1  'x, y, z'\n  2  '-x, -y, -z'\n"),
        "other_symmetry_operation": p1.replace("'x, y, z'", "'-x, -y, -z'"),
        "space_group_name_only": p1.replace("'P 1'", "'P -1'"),
        "partial_occupancy": Structure(Lattice.cubic(2.9), [{"Fe": 0.5}], [[0, 0, 0]]).to(fmt="cif"),
        "oxidation_states": oxidised.to(fmt="cif"),
        "no_occupancy_column": without_occupancy(p1),
        "magnetic_moments": str(CifWriter(magnetic, write_magmoms=True)),
        "uncertainty": p1.replace("0.50000000  0.50000000  0.50000000", "0.5000(1)  0.50000000  0.50000000"),
        "dummy_species": p1.replace("  Na  Na0", "  Xx  Xx0"),
        "sites_pymatgen_merges": Structure(
            Lattice.cubic(5.6), ["Na", "Cl"], [[0, 0, 0], [0.99999, 0.00001, 0]]
        ).to(fmt="cif"),
        "two_data_blocks": p1 + p1.replace("data_NaCl", "data_NaCl2"),
        "unknown_tag": p1.replace("_cell_volume", "_cell_measurement_temperature   293\n_cell_volume"),
        "empty_site_loop": p1[: p1.index("  Na  Na0")],
        "truncated": p1[: p1.index("loop_\n _atom_site")],
        "not_a_cif": "this is not a CIF\n",
        "empty": "",
    }


@pytest.mark.parametrize("case", list(fallback_cases()))
def test_fast_path_declines(case: str) -> None:
    assert parse_p1_cif(fallback_cases()[case]) is None


@pytest.mark.parametrize(
    "case",
    ["space_group", "other_symmetry_operation", "oxidation_states", "no_occupancy_column", "uncertainty"],
)
def test_declined_cifs_still_parse_through_pymatgen(case: str) -> None:
    cif = fallback_cases()[case]
    record = MaterialRecord("x", "test", {}, cif, "cif")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        structure = record.to_structure()
    assert not differences(structure, pymatgen_parse(cif))
    if case == "oxidation_states":
        assert structure[0].specie == Species("Na", 1)


@pytest.mark.parametrize(
    ("case", "reason", "detail"),
    [
        ("partial_occupancy", "partial_occupancy", "site 0 holds Fe0.5"),
        ("dummy_species", "unknown_element", "no element embedding for Xx"),
        ("sites_pymatgen_merges", "malformed_cif", "sites overlap: the occupancies at one position add up to 2"),
        ("empty_site_loop", "empty_structure", "the CIF has a cell but no atom sites"),
        ("truncated", "malformed_cif", "the CIF has no atom-site loop"),
        ("not_a_cif", "malformed_cif", "the text has no data_ block header, so it is not a CIF"),
        ("empty", "malformed_cif", "the CIF text is empty"),
    ],
)
def test_declined_bad_cifs_fail_as_before(case: str, reason: str, detail: str) -> None:
    # The fast reader declines them; pymatgen's failure is explained in words, with the record's place.
    record = MaterialRecord("mp-bad", "data.jsonl:3", {}, fallback_cases()[case], "cif")
    with pytest.raises(DataError) as caught:
        check_structure(record)
    assert caught.value.reason == reason
    assert str(caught.value).startswith(f"data.jsonl:3 (mp-bad): {reason}: {detail}"), str(caught.value)
