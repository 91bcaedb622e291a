"""A fast reader for the P1 CIFs that pymatgen's CifWriter writes for ordered structures.

pymatgen's general CIF parser (tokenizer, symmetry operations, site merging, occupancy checks) takes
about 6 ms a structure and is most of the time of a first graph build; the graph itself costs well
under 1 ms. The CIFs of the shared data, like those of most structure databases exported through
pymatgen, all have one fixed layout: a header of scalar tags, the single symmetry operation
'x, y, z', and one atom-site loop of element, label, multiplicity 1, x, y, z and occupancy 1. This
module reads exactly that layout and builds the Structure that ``Structure.from_str(text, fmt="cif")``
builds, bit for bit:

- the lattice from ``Lattice.from_parameters`` of the six cell parameters;
- fractional coordinates within 1e-4 (relative) of 1/3 or 2/3 set to those values, then wrapped
  into [0, 1) as ``x - floor(x)``;
- sites ordered as pymatgen's parser leaves them: sorted by composition, then by electronegativity
  and symbol (``Structure.get_sorted_structure``), both sorts stable;
- each site's species a ``Composition`` of one element with amount 1.0 (one immutable object per
  element, shared by its sites, as pymatgen's parser shares one per element), its label the CIF's
  label, no site or structure properties.

The sites and the Structure are assembled directly rather than through pymatgen's constructor, which
costs several microseconds a site in conversions and attribute hooks (more than all the rest); a
one-time comparison with the constructor's output guards against another pymatgen layout.

Everything else makes ``parse_p1_cif`` return None, so that the caller falls back to pymatgen: other
or several symmetry operations, a space group other than P 1, any tag, loop or column beyond those
CifWriter writes for P1 (oxidation states, magnetic moments, site properties), partial or missing
occupancy, a symbol that is not an element (or an isotope), uncertainties or quoted values where
numbers belong, values on their own line, multi-line text fields, several data blocks, sites close
enough for pymatgen to merge, a cell too thin for pymatgen, and any character a pymatgen-written CIF
does not contain. Bad CIFs thus still fail in pymatgen, with its messages.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass
from functools import cache, cmp_to_key

import numpy as np
from pymatgen.core import Composition, Element, Lattice, PeriodicSite, Structure

# The six cell parameters, in the order Lattice.from_parameters takes them.
CELL_TAGS = (
    "_cell_length_a",
    "_cell_length_b",
    "_cell_length_c",
    "_cell_angle_alpha",
    "_cell_angle_beta",
    "_cell_angle_gamma",
)
# Tags whose value must be exactly this (as written, quotes included).
_FIXED_TAGS = {"_symmetry_space_group_name_H-M": "'P 1'", "_symmetry_Int_Tables_number": "1"}
# Tags pymatgen's parser reads only to check the composition (a warning at most).
_IGNORED_TAGS = frozenset(
    {"_chemical_formula_structural", "_chemical_formula_sum", "_cell_volume", "_cell_formula_units_Z"}
)
_SYMOP_COLUMNS = ["_symmetry_equiv_pos_site_id", "_symmetry_equiv_pos_as_xyz"]
_SITE_COLUMNS = [
    "_atom_site_type_symbol",
    "_atom_site_label",
    "_atom_site_symmetry_multiplicity",
    "_atom_site_fract_x",
    "_atom_site_fract_y",
    "_atom_site_fract_z",
    "_atom_site_occupancy",
]
# The lines after the tags, as CifWriter writes them: the symmetry loop with its single row, then
# the atom-site loop's header.
_LAYOUT = ["loop_", *_SYMOP_COLUMNS, "1  'x, y, z'", "loop_", *_SITE_COLUMNS]
# Characters that would start a quoted value, a comment or a text field for pymatgen's tokenizer.
_TOKEN_SPECIALS = re.compile(r"['\";#]")
# One token as pymatgen's tokenizer reads it: bare (not a tag), or quoted without inner quotes.
_SINGLE_VALUE = re.compile(r"[^\s'\"_;][^\s'\"]*|'[^'\s][^']*'|\"[^\"\s][^\"]*\"")
# Control characters (other than tab, newline, carriage return) that CifWriter never writes.
_ODD_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

# pymatgen's parser rounds coordinates with math.isclose(x / frac, 1, abs_tol=1e-4, rel_tol=0).
_IDEAL_FRACTIONS = (1 / 3, 2 / 3)
_FRAC_TOLERANCE = 1e-4
# pymatgen merges sites whose fractional coordinates differ by less than 1e-4 in every component
# (periodically), which then fails its occupancy check; twice that is rejected here, to be safe.
_MERGE_TOLERANCE = 2e-4
# pymatgen refuses cells with a spacing d_100, d_010 or d_001 below 0.01 Å; twice that falls back.
_MIN_THICKNESS = 0.02


@dataclass(frozen=True)
class _ElementInfo:
    element: Element
    composition: Composition  # what its sites hold; immutable, so shared, as pymatgen's parser shares it
    x: float  # Pauling electronegativity, NaN where pymatgen has none
    rank: int  # position in the (X, symbol) order of the elements with an electronegativity, else -1


@cache
def _elements() -> dict[str, _ElementInfo]:
    """Every element pymatgen's parser reads from a bare symbol (named isotopes excepted)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pymatgen warns about each element without electronegativity
        elements = {element.symbol: element for element in Element if not element._is_named_isotope}
        values = {symbol: float(element.X) for symbol, element in elements.items()}
    with_x = sorted((x, symbol) for symbol, x in values.items() if not math.isnan(x))
    ranks = {symbol: rank for rank, (_, symbol) in enumerate(with_x)}
    return {
        symbol: _ElementInfo(element, Composition({element: 1.0}), values[symbol], ranks.get(symbol, -1))
        for symbol, element in elements.items()
    }


def parse_p1_cif(text: str) -> Structure | None:
    """The structure of a P1 CIF as pymatgen writes it, or None for any CIF of another form."""
    if not text.isascii() or _ODD_CHARACTERS.search(text):
        return None
    # Comments and blank lines go, as in pymatgen's tokenizer.
    lines = [line for line in map(str.strip, text.splitlines()) if line and line[0] != "#"]
    if not lines or not lines[0].startswith("data_"):
        return None
    end = 1
    while end < len(lines) and lines[end][0] == "_":
        end += 1
    header, tag_lines = lines[0], lines[1:end]
    layout = lines[end : end + len(_LAYOUT)]
    if layout != _LAYOUT:
        return None
    # A block named for a powder pattern is skipped by pymatgen; a '#' after the start of a line
    # would begin a comment there.
    if len(header.split()) != 1 or "powder_pattern" in header or any("#" in line for line in lines[:end]):
        return None
    scalars: dict[str, str] = {}
    for line in tag_lines:
        parts = line.split(None, 1)
        if len(parts) != 2 or parts[0] in scalars:
            return None  # a value on its own line, or a tag given twice
        scalars[parts[0]] = parts[1]
    lattice = _cell(scalars)
    if lattice is None:
        return None
    return _structure(lattice, lines[end + len(_LAYOUT) :])


def _cell(scalars: dict[str, str]) -> Lattice | None:
    """The lattice pymatgen's parser builds from the header, if every tag is one this reader knows."""
    for tag, value in scalars.items():
        if tag in _FIXED_TAGS:
            if value != _FIXED_TAGS[tag]:
                return None
        elif tag in _IGNORED_TAGS:
            if not _SINGLE_VALUE.fullmatch(value):
                return None
        elif tag not in CELL_TAGS:
            return None
    try:
        a, b, c, alpha, beta, gamma = (float(scalars[tag]) for tag in CELL_TAGS)
    except (KeyError, ValueError):
        return None
    if not all(math.isfinite(length) and length > 0 for length in (a, b, c)):
        return None
    if not all(0 < angle < 180 for angle in (alpha, beta, gamma)):
        return None
    # Plane spacings: d_100 = volume / (b c sin(alpha)), and so on. A cell pymatgen would refuse as
    # too thin (or that is no cell at all) falls back, with the tolerance doubled against rounding.
    cosines = [math.cos(math.radians(angle)) for angle in (alpha, beta, gamma)]
    squared = 1.0 - sum(x * x for x in cosines) + 2.0 * cosines[0] * cosines[1] * cosines[2]
    if not squared > 0:
        return None
    volume = a * b * c * math.sqrt(squared)
    sines = [math.sin(math.radians(angle)) for angle in (alpha, beta, gamma)]
    faces = (b * c * sines[0], c * a * sines[1], a * b * sines[2])
    if not volume > _MIN_THICKNESS * max(faces):
        return None
    lattice = Lattice.from_parameters(a, b, c, alpha, beta, gamma)
    return lattice if np.isfinite(lattice.matrix).all() else None


def _structure(lattice: Lattice, rows: list[str]) -> Structure | None:
    """The sites of the atom-site rows, checked, rounded, wrapped and ordered as pymatgen does."""
    if not rows:
        return None
    # pymatgen reads a loop as a stream of tokens, whatever the line breaks, and so does this. Any
    # line after the loop's header is taken as a row: a tag or another loop cannot pass as one, since
    # every column is checked below.
    block = "\n".join(rows)
    if _TOKEN_SPECIALS.search(block):
        return None
    tokens = block.split()
    if len(tokens) % 7:
        return None
    symbols, labels = tokens[0::7], tokens[1::7]
    if set(tokens[2::7]) != {"1"} or not set(tokens[6::7]) <= {"1", "1.0"}:
        return None  # a multiplicity other than 1, or partial occupancy
    elements = _elements()
    infos = [elements.get(symbol) for symbol in symbols]
    if None in infos:
        return None  # not an element symbol (a dummy, an oxidation state, a label as symbol...)
    if any(label[0] == "_" or label.startswith(("loop_", "data_")) for label in labels):
        return None
    try:
        columns = np.array(list(map(float, tokens[3::7] + tokens[4::7] + tokens[5::7])), dtype=np.float64)
    except ValueError:
        return None  # uncertainties such as 0.25(1), '?' or '.'
    coords = columns.reshape(3, -1).T.copy()
    if not np.isfinite(coords).all():
        return None

    # Both masks from the values as read, then set: pymatgen compares each value as read.
    near = [np.abs(coords / fraction - 1.0) <= _FRAC_TOLERANCE for fraction in _IDEAL_FRACTIONS]
    for fraction, mask in zip(_IDEAL_FRACTIONS, near):
        coords[mask] = fraction
    coords -= np.floor(coords)
    if _has_close_sites(coords):
        return None

    order = _site_order(infos)
    species = [infos[i].composition for i in order]
    sorted_labels = [labels[i] for i in order]
    if _direct_assembly_works():
        return _assemble(lattice, species, coords[order], sorted_labels)
    return Structure(lattice, species, coords[order], labels=sorted_labels)


def _assemble(lattice: Lattice, species: list[Composition], coords: np.ndarray, labels: list[str]) -> Structure:
    """The Structure that Structure(lattice, species, coords, labels=labels) builds, without its checks.

    The inputs are already what the constructor's conversions produce; its Site.__setattr__ hooks
    are skipped by filling each object's attributes at once.
    """
    new_site = PeriodicSite.__new__
    sites = []
    for composition, frac_coords, label in zip(species, coords, labels):
        site = new_site(PeriodicSite)
        site.__dict__.update(
            _lattice=lattice, _frac_coords=frac_coords, _species=composition, _coords=None, properties={}, _label=label
        )
        sites.append(site)
    structure = Structure.__new__(Structure)
    structure.__dict__.update(_lattice=lattice, _sites=sites, _charge=None, _properties={})
    return structure


@cache
def _direct_assembly_works() -> bool:
    """Whether _assemble gives what pymatgen's constructor gives, attribute for attribute.

    Checked once, so that a pymatgen with another layout of its objects gets its own constructor.
    """
    lattice = Lattice.cubic(2.0)
    species = [Composition({Element.H: 1.0}), Composition({Element.O: 1.0})]
    coords = np.array([[0.0, 0.0, 0.0], [0.5, 0.25, 0.125]])
    reference = Structure(lattice, species, coords, labels=["H0", "O1"])
    built = _assemble(lattice, species, coords, ["H0", "O1"])
    pairs = [(built, reference), *zip(built, reference)]
    same_layout = all(
        vars(ours).keys() == vars(theirs).keys()
        and all(type(value) is type(vars(theirs)[name]) for name, value in vars(ours).items())
        for ours, theirs in pairs
    )
    return same_layout and built == reference and built.labels == reference.labels


def _has_close_sites(coords: np.ndarray) -> bool:
    """Whether two sites are within the merging tolerance in every component, periodically."""
    if len(coords) < 2:
        return False
    dx = coords[:, None, 0] - coords[None, :, 0]
    dx -= np.round(dx)
    first, second = np.nonzero(np.abs(dx) < _MERGE_TOLERANCE)
    pairs = first < second
    if not pairs.any():
        return False
    first, second = first[pairs], second[pairs]
    d = coords[first, 1:] - coords[second, 1:]
    d -= np.round(d)
    return bool((np.abs(d) < _MERGE_TOLERANCE).all(axis=1).any())


def _site_order(infos: list[_ElementInfo]) -> list[int]:
    """The order pymatgen's parser gives the sites (indices into the CIF's rows).

    It sorts the sites by composition (for single elements: by descending (X, symbol), NaN counting
    as infinite), then stably by ``Site.__lt__``: electronegativity, then symbol. Where every
    electronegativity is known, both are total orders and the result is the stable (X, symbol) sort
    of the rows. NaN makes ``Site.__lt__`` inconsistent and the outcome depends on the sort's
    comparisons, so both sorts are then replayed with pymatgen's comparisons.
    """
    if all(info.rank >= 0 for info in infos):
        return sorted(range(len(infos)), key=lambda index: infos[index].rank)

    def element_key(index: int) -> tuple[float, str]:
        info = infos[index]
        return (math.inf if math.isnan(info.x) else info.x, info.element.symbol)

    def site_compare(first: int, second: int) -> int:
        a, b = infos[first], infos[second]
        if a.x < b.x:
            return -1
        if a.x > b.x:
            return 1
        return -1 if a.element.symbol < b.element.symbol else 1  # sorted() only asks whether the result is < 0

    by_composition = sorted(range(len(infos)), key=element_key, reverse=True)
    return sorted(by_composition, key=cmp_to_key(site_compare))
