"""Energy above the convex hull, derived from formation energies per atom of a set of materials.

The hull is the one of the given materials plus zero-energy elemental references (formation energies
are relative to the elements). A material's hull energy only involves materials whose elements are a
subset of its own, so rather than one phase diagram over ~90 elements (hopeless in that dimension) or
pymatgen's PatchedPhaseDiagram (over two minutes on the 36,737 shared materials, and it falls back to an
optimiser for systems that no patch covers), the materials are grouped by maximal chemical system
(one not inside another) and one hull is built per group from the entries that can lie on a hull:
the lowest per reduced composition, with a negative formation energy.

Two ways to build a group's hull give the same numbers (within 1e-13 eV/atom on the shared file):
- "phase_diagram": pymatgen's PhaseDiagram and its get_hull_energy_per_atom. Its Python overhead of a
  few ms per diagram makes it 90-140 s for the ~10.7k groups of the shared file on 2 cores.
- "planes" (default): scipy's ConvexHull (the Qhull that PhaseDiagram itself calls) on the same points;
  the lower hull of formation energy over composition is convex, so the hull energy at a composition is
  the largest value of the lower facets' planes there, evaluated for all members of a group at once.
  10-15 s for the shared file on 2 busy cores, most of it in Qhull for the few groups of 5 to 8 elements.
"""

from __future__ import annotations

import re
import warnings
from collections import defaultdict
from collections.abc import Iterable, Sequence
from itertools import combinations
from typing import Literal

import numpy as np
from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
from pymatgen.core import Composition, Element
from scipy.spatial import ConvexHull, QhullError

from cgat_dgl.data.records import MaterialRecord

HullMethod = Literal["planes", "phase_diagram"]
ChemSys = frozenset[str]
Point = tuple[dict[str, float], float]  # atomic fractions by element symbol, formation energy per atom

# PhaseDiagram's own threshold for an entry to take part in the hull.
_FORMATION_TOL = PhaseDiagram.formation_energy_tol
# An entry this far above the hull of its own system (eV/atom) is left out of larger hulls.
_PRUNE_TOL = 1e-6
_FORMULA_SUM = re.compile(r"^[ \t]*_chemical_formula_sum[ \t]+(.+?)[ \t]*$", re.MULTILINE)


def composition_of(record: MaterialRecord) -> Composition:
    """The composition of a record, without parsing the structure where the payload allows it.

    A CIF is read from its `_chemical_formula_sum` line (pymatgen writes one; in a symmetrised CIF it may
    be the formula per unit rather than per cell, which leaves the atomic fractions, all a hull needs,
    unchanged). A structure dict sums the species occupancies of its sites. Anything else is parsed.
    """
    if record.kind == "cif":
        match = _FORMULA_SUM.search(record.payload)
        if match:
            composition = _composition_or_none(match.group(1).strip("'\""))
            if composition is not None:
                return composition
    elif record.kind == "structure_dict":
        amounts: dict[str, float] = defaultdict(float)
        try:
            for site in record.payload["sites"]:
                for species in site["species"]:
                    amounts[species["element"]] += float(species.get("occu", 1.0))
        except (KeyError, TypeError, ValueError):
            amounts.clear()
        composition = _composition_or_none(amounts) if amounts else None
        if composition is not None:
            return composition
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return record.to_structure().composition


def _composition_or_none(formula: str | dict[str, float]) -> Composition | None:
    try:
        composition = Composition(formula)
    except (ValueError, KeyError, TypeError):
        return None
    return composition if composition.num_atoms > 0 else None


def _subsystems(system: ChemSys) -> Iterable[ChemSys]:
    elements = sorted(system)
    for size in range(1, len(elements) + 1):
        for subset in combinations(elements, size):
            yield frozenset(subset)


def _owners(systems: Iterable[ChemSys]) -> dict[ChemSys, ChemSys]:
    """Map every system to a maximal one (inside no other) that contains it, preferring small ones."""
    systems = set(systems)
    covered: set[ChemSys] = set()
    for system in systems:
        covered.update(sub for sub in _subsystems(system) if sub != system)
    maximal = sorted((s for s in systems if s not in covered), key=lambda s: (len(s), sorted(s)))
    owner: dict[ChemSys, ChemSys] = {}
    for system in maximal:
        for sub in _subsystems(system):
            if sub in systems:
                owner.setdefault(sub, system)
    return owner


def _fractions(composition: Composition) -> dict[str, float]:
    amounts = composition.get_el_amt_dict()
    total = sum(amounts.values())
    return {symbol: amount / total for symbol, amount in amounts.items()}


def _hull_by_planes(elements: list[str], points: list[Point], queries: np.ndarray) -> np.ndarray:
    """Hull energies per atom at the query fractions (rows over `elements`) from (fractions, energy) points."""
    dim = len(elements)
    coords = np.array([[f.get(el, 0.0) for el in elements[1:]] + [e] for f, e in points])
    references = np.hstack([np.eye(dim)[:, 1:], np.zeros((dim, 1))])
    # A point above the centre keeps the hull full-dimensional when every entry lies in one plane.
    top = np.append(np.full(dim - 1, 1.0 / dim), max(coords[:, -1].max(), 0.0) + 1.0)
    hull = ConvexHull(np.vstack([coords, references, top]))
    top_index = len(coords) + dim
    lower = (hull.equations[:, -2] < -1e-9) & ~np.any(hull.simplices == top_index, axis=1)
    normals, offsets = hull.equations[lower, :-2], hull.equations[lower, -1]
    heights = hull.equations[lower, -2]
    # On a lower facet n.x + h*E + c = 0, so E = -(n.x + c) / h; the convex hull is the largest of them.
    planes = -(queries[:, 1:] @ normals.T + offsets) / heights
    return planes.max(axis=1)


def _hull_by_phase_diagram(elements: list[str], points: list[Point], queries: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # formulas note elements without an electronegativity (He, Ne, ...)
        entries = [PDEntry(Composition(f), e) for f, e in points]
        entries += [PDEntry(Composition({el: 1}), 0.0) for el in elements]
        diagram = PhaseDiagram(entries, elements=[Element(el) for el in elements])
        compositions = [Composition({el: x for el, x in zip(elements, row) if x > 0}) for row in queries]
        return np.array([diagram.get_hull_energy_per_atom(c) for c in compositions])


def energy_above_hull(
    compositions: Sequence[Composition | str],
    e_form_per_atom: Sequence[float],
    *,
    method: HullMethod = "phase_diagram",
) -> np.ndarray:
    """Energy above the hull (eV/atom) of each material, relative to the hull of all the given materials.

    ``phase_diagram`` (the default) builds pymatgen's PhaseDiagram per chemical system; ``planes`` reads
    the same Qhull facets directly and is about ten times faster on large sets (tests hold them equal).

    A material with a NaN formation energy gets NaN and takes no part in the hull. Stable materials get
    0 (values within 1e-9 of it are set to 0); an element with a positive formation energy lies above its
    zero reference.
    """
    if len(compositions) != len(e_form_per_atom):
        raise ValueError(f"{len(compositions)} compositions but {len(e_form_per_atom)} formation energies")
    if method not in ("planes", "phase_diagram"):
        raise ValueError(f"unknown hull method {method!r}: use 'planes' or 'phase_diagram'")
    energies = np.asarray(e_form_per_atom, dtype=float)
    result = np.full(len(compositions), np.nan)
    valid = [i for i in range(len(compositions)) if np.isfinite(energies[i])]
    fractions: dict[int, dict[str, float]] = {}
    for i in valid:
        composition = compositions[i]
        fractions[i] = _fractions(composition if isinstance(composition, Composition) else Composition(composition))

    # Only the lowest entry per composition with a negative formation energy can shape a hull.
    lowest: dict[tuple[tuple[str, float], ...], int] = {}
    for i in valid:
        if energies[i] < -_FORMATION_TOL:
            key = tuple(sorted((el, round(x, 10)) for el, x in fractions[i].items()))
            if key not in lowest or energies[i] < energies[lowest[key]]:
                lowest[key] = i
    candidates: dict[ChemSys, list[int]] = defaultdict(list)
    for i in lowest.values():
        candidates[frozenset(fractions[i])].append(i)

    by_system: dict[ChemSys, list[int]] = defaultdict(list)
    for i in valid:
        by_system[frozenset(fractions[i])].append(i)
    owner = _owners(by_system)
    groups: dict[ChemSys, list[int]] = defaultdict(list)
    for system, indices in by_system.items():
        groups[owner[system]].extend(indices)

    build = _hull_by_planes if method == "planes" else _hull_by_phase_diagram
    # Smaller systems first: whether an entry is on the hull depends only on its own chemical system, so
    # an entry found above it there is left out of every larger hull (which keeps those hulls small).
    for system in sorted(groups, key=lambda s: (len(s), sorted(s))):
        indices = groups[system]
        elements = sorted(system)
        points = [
            (fractions[i], float(energies[i]))
            for sub in _subsystems(system)
            for i in candidates.get(sub, ())
            if not result[i] > _PRUNE_TOL  # NaN: not decided yet
        ]
        queries = np.array([[fractions[i].get(el, 0.0) for el in elements] for i in indices])
        if any(len(f) > 1 for f, _ in points):
            try:
                hull_energy = build(elements, points, queries)
            except QhullError:
                # Nearly coincident points can defeat Qhull's precision checks; PhaseDiagram copes.
                hull_energy = _hull_by_phase_diagram(elements, points, queries)
        else:
            # No compound below the elements: the hull joins the elemental references.
            references = {el: 0.0 for el in elements}
            for f, e in points:
                (el,) = f
                references[el] = min(references[el], e)
            hull_energy = queries @ np.array([references[el] for el in elements])
        result[indices] = energies[indices] - hull_energy
    result[np.abs(result) < 1e-9] = 0.0
    return result
