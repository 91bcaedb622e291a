"""Energy above the hull: hand-made systems with known hulls, and real materials against pymatgen."""

from __future__ import annotations

import warnings
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
from pymatgen.core import Composition

from cgat_dgl.data.hull import composition_of, energy_above_hull
from cgat_dgl.data.readers import read_records
from cgat_dgl.data.records import MaterialRecord

METHODS = ["planes", "phase_diagram"]


@pytest.mark.parametrize("method", METHODS)
def test_binary_system_with_known_hull(method: str) -> None:
    # Li-Mg: LiMg at -1.0 eV/atom is on the hull; Li3Mg sits above the Li--LiMg tie line (-0.5 at x=1/4).
    names = ["Li", "Mg", "LiMg", "Li3Mg", "LiMg3", "LiMg"]
    energies = [0.0, 0.0, -1.0, -0.4, -0.8, -0.9]
    result = energy_above_hull(names, energies, method=method)
    # LiMg3 is below the LiMg--Mg line (-0.5 at x=3/4), so it is stable; the second LiMg is 0.1 above the first.
    np.testing.assert_allclose(result, [0.0, 0.0, 0.0, 0.1, 0.0, 0.1], atol=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_ternary_system_with_known_hull(method: str) -> None:
    # The hull at ABC (1/3 each) is 2/3 AB + 1/3 C = -2/3; AC2 at -0.1 is stable but does not help ABC.
    names = ["Na", "K", "Cl", "NaK", "NaCl2", "NaKCl"]
    energies = [0.0, 0.0, 0.0, -1.0, -0.1, -0.5]
    result = energy_above_hull([Composition(n) for n in names], energies, method=method)
    np.testing.assert_allclose(result, [0, 0, 0, 0, 0, 1 / 6], atol=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_elements_nan_and_unrelated_systems(method: str) -> None:
    names = ["Cs", "Cs", "Au", "CsAu", "Cu2O", "Cu", "O2", "CuO"]
    energies = [0.04, -0.01, 0.0, -0.6, float("nan"), 0.0, 0.0, -0.8]
    result = energy_above_hull(names, energies, method=method)
    assert np.isnan(result[4])  # no energy, and no part in the hull: CuO (x=1/2) stays the only compound
    # A positive elemental formation energy lies above the zero reference; a negative one becomes the reference.
    np.testing.assert_allclose(np.delete(result, 4), [0.05, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], atol=1e-12)
    with_cu2o = energy_above_hull(names[:4] + ["Cu2O"] + names[5:], energies[:4] + [-0.3] + energies[5:], method=method)
    # Cu2O at x_O = 1/3: the Cu--CuO line gives -0.8 * (2/3) = -0.533, so Cu2O is 0.2333 above it.
    assert with_cu2o[4] == pytest.approx(-0.3 + 0.8 * 2 / 3, abs=1e-12)


def test_mismatched_lengths_and_unknown_method() -> None:
    with pytest.raises(ValueError, match="2 compositions but 1"):
        energy_above_hull(["Li", "Mg"], [0.0])
    with pytest.raises(ValueError, match="unknown hull method"):
        energy_above_hull(["Li"], [0.0], method="lp")  # type: ignore[arg-type]


def real_materials(path: Path, count: int) -> tuple[list[Composition], np.ndarray]:
    records = list(islice(read_records(path, ["e_form_pbe"]), count))
    return [composition_of(r) for r in records], np.array([r.targets["e_form_pbe"] for r in records])


def test_composition_from_the_cif_line_matches_the_parsed_structure(shared_sample_path: Path) -> None:
    records = list(islice(read_records(shared_sample_path), 100))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parsed = [r.to_structure().composition for r in records]
    assert [composition_of(r) for r in records] == parsed
    structure = records[5].to_structure()
    as_dict = MaterialRecord("x", "x.json#0", {}, structure.as_dict(), "structure_dict")
    as_object = MaterialRecord("x", "x.json#0", {}, structure, "structure")
    no_formula = MaterialRecord("x", "x.jsonl:1", {}, records[5].payload.replace("_chemical_formula_sum", "_x"), "cif")
    assert composition_of(as_dict) == composition_of(as_object) == composition_of(no_formula) == structure.composition


def test_planes_agree_with_pymatgen_on_real_materials(shared_data_path: Path) -> None:
    compositions, energies = real_materials(shared_data_path, 2500)
    planes = energy_above_hull(compositions, energies, method="planes")
    diagrams = energy_above_hull(compositions, energies, method="phase_diagram")
    np.testing.assert_allclose(planes, diagrams, atol=1e-8)
    assert (planes >= 0).all() and 0 < (planes == 0).sum() < len(planes)

    # The grouping by chemical system against one plain PhaseDiagram per material's own system.
    rng = np.random.default_rng(0)
    picks = rng.choice([i for i, c in enumerate(compositions) if len(c.elements) >= 3], size=25, replace=False)
    for i in picks:
        elements = set(compositions[i].elements)
        inside = [(c, e) for c, e in zip(compositions, energies, strict=True) if set(c.elements) <= elements]
        entries = [PDEntry(c, e * c.num_atoms) for c, e in inside]
        entries += [PDEntry(Composition({el: 1}), 0.0) for el in elements]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pymatgen notes elements without an electronegativity
            diagram = PhaseDiagram(entries)
        expected = diagram.get_e_above_hull(PDEntry(compositions[i], energies[i] * compositions[i].num_atoms))
        assert planes[i] == pytest.approx(expected, abs=1e-8)
