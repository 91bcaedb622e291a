"""Checks of bad input: cheap record-level ones at load time, structure-level ones after parsing.

Every failure is a DataError whose reason is a short key (counted in a LoadReport) and whose source
names the file, line (or entry) and id, e.g. "data.jsonl:17 (mp-123): malformed_cif: ...". The detail
of a malformed CIF says in words what is missing or wrong ("the CIF has no loop_ at all (an atom-site
loop is needed)"), from a scan of the text and from pymatgen's exception, rather than quoting a bare
KeyError such as '_atom_site_label'.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

from pymatgen.core import Structure
from pymatgen.core.periodic_table import DummySpecies

from cgat_dgl.data.elements import supported_atomic_numbers
from cgat_dgl.data.p1_cif import CELL_TAGS
from cgat_dgl.data.records import DataError, MaterialRecord

# Reasons, as counted in LoadReport.dropped.
MISSING_FILE = "missing_file"
MALFORMED_LINE = "malformed_line"
UNKNOWN_PROPERTY = "unknown_property"
NAN_TARGET = "nan_target"
DUPLICATE_ID = "duplicate_id"
MALFORMED_CIF = "malformed_cif"
MALFORMED_STRUCTURE = "malformed_structure"
EMPTY_STRUCTURE = "empty_structure"
PARTIAL_OCCUPANCY = "partial_occupancy"
UNKNOWN_ELEMENT = "unknown_element"

_OCCUPANCY_TOL = 1e-6


def where(record: MaterialRecord, *, targets: bool = False) -> str:
    """The place a message about a record points to: file and line (or entry), then the id."""
    source = record.target_source if targets and record.target_source else record.source
    return f"{source} ({record.id})"


def check_record(record: MaterialRecord, first_seen: Mapping[str, str]) -> DataError | None:
    """The cheap checks, without parsing: finite targets, and an id not seen before.

    `first_seen` maps the ids kept so far to where they were read.
    """
    for name, value in record.targets.items():
        if not math.isfinite(value):
            return DataError(NAN_TARGET, where(record, targets=True), f"{name} = {value}")
    if record.id in first_seen:
        return DataError(DUPLICATE_ID, where(record), f"id already read at {first_seen[record.id]}; the first is kept")
    return None


def check_structure(record: MaterialRecord) -> Structure:
    """Parse a record's structure and check it can be turned into a graph; raise DataError if not.

    pymatgen's parsing warnings are captured (and quoted in the error when parsing fails) instead of
    being printed, since this runs for every structure, in worker processes.
    """
    source = where(record)
    if record.kind == "structure_dict" and isinstance(record.payload, Mapping) and not record.payload.get("sites"):
        raise DataError(EMPTY_STRUCTURE, source, "the structure has no sites")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            structure = record.to_structure()
        except Exception as exc:  # pymatgen raises many types for bad text
            if record.kind == "cif" and _cif_without_sites(record.payload):
                raise DataError(EMPTY_STRUCTURE, source, "the CIF has a cell but no atom sites") from exc
            notes = [str(w.message) for w in caught]
            if record.kind == "cif":
                raise DataError(MALFORMED_CIF, source, explain_cif_failure(record.payload, exc, notes)) from exc
            raise DataError(MALFORMED_STRUCTURE, source, _explain(exc, notes)) from exc
    if not isinstance(structure, Structure):
        reason = MALFORMED_CIF if record.kind == "cif" else MALFORMED_STRUCTURE
        raise DataError(reason, source, "no structure could be read")
    if len(structure) == 0:
        raise DataError(EMPTY_STRUCTURE, source, "the structure has no sites")
    _check_elements(structure, source)
    _check_occupancy(structure, source)
    return structure


def _check_elements(structure: Structure, source: str) -> None:
    supported = supported_atomic_numbers()
    unknown = []
    for species in structure.composition.elements:
        if isinstance(species, DummySpecies):
            unknown.append(f"{species.symbol} (not an element)")
            continue
        element = getattr(species, "element", species)  # Species carry an oxidation state around an Element
        if element.Z not in supported:
            unknown.append(f"{element.symbol} (Z={element.Z})")
    if unknown:
        raise DataError(UNKNOWN_ELEMENT, source, f"no element embedding for {', '.join(unknown)}")


def _check_occupancy(structure: Structure, source: str) -> None:
    for index, site in enumerate(structure):
        occupancy = sum(site.species.values())
        if len(site.species) != 1 or abs(occupancy - 1.0) > _OCCUPANCY_TOL:
            raise DataError(
                PARTIAL_OCCUPANCY, source, f"site {index} holds {site.species.formula} (total occupancy {occupancy:g})"
            )


def _cif_without_sites(text: str) -> bool:
    """True when the CIF has a cell and an atom-site loop with no rows (what a writer emits for no atoms).

    A CIF that simply stops before its atom sites is called malformed instead: it may be truncated.
    pymatgen's own CIF tokenizer fails on an empty loop, hence this scan of the lines.
    """
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    if not any(line.startswith("_cell_length_a") for line in lines):
        return False
    for start, line in enumerate(lines):
        if line != "loop_":
            continue
        end = start + 1
        while end < len(lines) and lines[end].startswith("_"):
            end += 1
        header = lines[start + 1 : end]
        if any(tag.startswith(("_atom_site_fract_x", "_atom_site_Cartn_x")) for tag in header):
            return end == len(lines) or lines[end].startswith(("loop_", "data_"))
    return False


def _explain(exc: Exception, messages: list[str]) -> str:
    detail = " ".join(str(exc).split()) or type(exc).__name__
    notes = []
    for message in messages:
        note = " ".join(message.split())
        if note and note not in notes and not note.startswith("Issues encountered while parsing CIF"):
            notes.append(note)
    if notes:
        detail += " (" + "; ".join(notes[:2]) + ")"
    return detail[:400]


# --- readable reasons for CIFs that do not parse ---------------------------------------------------------

# One value as CIF writes it: quoted (may hold spaces) or bare.
_CIF_TOKEN = re.compile(r"'[^']*'|\"[^\"]*\"|\S+")
# A number with an optional standard uncertainty in parentheses, which pymatgen strips: 3.61(2).
_UNCERTAINTY = re.compile(r"\(\d+\)$")
_NO_STRUCTURE_NOTE = re.compile(r"No structure parsed for section \d+ in CIF\.\s*(.*)", re.S)
_MISSING_KEY = re.compile(r"'(_[^'\s]+)'")
_NOT_A_FLOAT = re.compile(r"could not convert string to float: (.*)")
_RAGGED_LOOP = re.compile(r"len\(items\)=(\d+) is not a multiple of n=(\d+)")
_OVERLAP = re.compile(r"Occupancy ([0-9.]+) exceeded tolerance")
# Atom-site columns that hold numbers (not symbols or labels), by a part of their name.
_NUMERIC_COLUMN_PARTS = ("fract_", "cartn_", "occupancy", "multiplicity", "_iso")


@dataclass
class _Loop:
    columns: list[str] = field(default_factory=list)
    values: list[str] = field(default_factory=list)
    countable: bool = True  # False when a multi-line text field makes the value count uncertain


@dataclass
class _CifOutline:
    """What a line scan sees in a CIF: data blocks, scalar tags with their values, and loops.

    Only for explaining a failure pymatgen already reported, so it is rough where CIFs are rare
    (multi-line text fields, values on their own line); tag names are normalised to lower case with
    '.' as '_' (CIF 2 writes _cell.length_a).
    """

    data_blocks: int = 0
    tags: dict[str, str] = field(default_factory=dict)
    loops: list[_Loop] = field(default_factory=list)

    @classmethod
    def of(cls, text: str) -> "_CifOutline":
        outline = cls()
        loop: _Loop | None = None
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("data_"):
                outline.data_blocks += 1
                loop = None
            elif line.lower() == "loop_":
                loop = _Loop()
                outline.loops.append(loop)
            elif line.startswith("_"):
                name, _, value = line.replace("\t", " ").partition(" ")
                name = name.lower().replace(".", "_")
                if loop is not None and not loop.values and not value.strip():
                    loop.columns.append(name)  # a column of the loop's header
                else:
                    loop = None
                    outline.tags[name] = value.strip()
            elif loop is not None:
                loop.countable = loop.countable and not line.startswith(";")
                loop.values.extend(_CIF_TOKEN.findall(line))
        return outline

    def atom_site_loop(self) -> _Loop | None:
        for loop in self.loops:
            if any(c.startswith("_atom_site_") and not c.startswith("_atom_site_aniso") for c in loop.columns):
                return loop
        return None

    def columns(self) -> set[str]:
        return {column for loop in self.loops for column in loop.columns}


def explain_cif_failure(text: object, exc: Exception, notes: list[str]) -> str:
    """Why a CIF could not be parsed, in words: what is missing or wrong, where it can be told.

    Structural faults (empty text, no data block, cell parameters missing or not numbers, no loop, no
    atom-site loop) are found by scanning the text, since pymatgen reports them obliquely (a KeyError
    of one column, "cannot reshape array", "Invalid CIF file with no structures!"). What only the
    parser sees (a missing column, a value that is no number, a loop with a value too many, a singular
    cell, merged sites) is read from its exception and warnings. Anything else quotes pymatgen.
    """
    if not isinstance(text, str):
        return _explain(exc, notes)
    return _cif_outline_problem(text) or _cif_parser_problem(text, exc, notes) or _explain(exc, notes)


def _cif_outline_problem(text: str) -> str | None:
    if not text.strip():
        return "the CIF text is empty"
    outline = _CifOutline.of(text)
    if not outline.data_blocks:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        first = next((line for line in lines if not line.startswith("#")), lines[0])
        return f"the text has no data_ block header, so it is not a CIF (it begins {first[:40]!r})"
    present = set(outline.tags) | outline.columns()
    missing = [tag for tag in CELL_TAGS if tag not in present]
    if len(missing) == len(CELL_TAGS):
        return "the CIF has no cell parameters (_cell_length_a/b/c, _cell_angle_alpha/beta/gamma)"
    if missing:
        return f"the CIF has no {', '.join(missing)} (all six cell parameters are needed)"
    for tag in CELL_TAGS:
        value = outline.tags.get(tag, "")
        if value and not _is_number(value):
            return f"the cell parameter {tag} is {value!r}, not a number"
    if not outline.loops:
        return "the CIF has no loop_ at all (an atom-site loop is needed)"
    if outline.atom_site_loop() is None:
        return "the CIF has no atom-site loop (no loop of _atom_site_ columns; the text may be truncated)"
    for loop in outline.loops:
        if loop.columns and loop.countable and len(loop.values) % len(loop.columns):
            return (
                f"the loop of {loop.columns[0]}... has {len(loop.values)} values, not a multiple of its "
                f"{len(loop.columns)} columns (a value missing or extra)"
            )
    return None


def _cif_parser_problem(text: str, exc: Exception, notes: list[str]) -> str | None:
    """A readable reason from pymatgen's exception or its "No structure parsed" warning, if one fits."""
    inner = [str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)]
    for note in notes:
        match = _NO_STRUCTURE_NOTE.match(" ".join(note.split()))
        if match:
            inner.append(match.group(1))
    for message in inner:
        message = message.strip()
        key = _MISSING_KEY.fullmatch(message)
        if key or (isinstance(exc, KeyError) and message.startswith("_")):
            name = key.group(1) if key else message
            if name.startswith("_atom_site"):
                return f"the atom-site loop has no {name} column"
            return f"the CIF has no {name} item"
        if match := _NOT_A_FLOAT.match(message):
            return _not_a_number(text, match.group(1))
        if match := _RAGGED_LOOP.search(message):
            values, columns = match.groups()
            return f"a loop has {values} values, not a multiple of its {columns} columns (a value missing or extra)"
        if "Singular matrix" in message:
            return "the cell is degenerate: its lattice matrix is singular (a zero length, or angles that flatten it)"
        if match := _OVERLAP.search(message):
            return f"sites overlap: the occupancies at one position add up to {match.group(1)} (more than 1)"
        if "cannot reshape array" in message:
            return "the cell parameters could not be read as six numbers"
    return None


def _not_a_number(text: str, quoted: str) -> str:
    """Where the value pymatgen could not read as a number is: which column of which site, or which tag."""
    value = quoted.strip().strip("'\"")
    outline = _CifOutline.of(text)
    sites = outline.atom_site_loop()
    if sites is not None:
        columns = sites.columns
        for index, token in enumerate(sites.values):
            column = columns[index % len(columns)]
            if token.strip("'\"") == value and any(part in column for part in _NUMERIC_COLUMN_PARTS):
                return f"site {index // len(columns) + 1} of the atom-site loop has {column} {value!r}, not a number"
    for tag, tag_value in outline.tags.items():
        if tag_value.strip("'\"") == value:
            return f"{tag} is {value!r}, not a number"
    return f"a value that must be a number is {value!r}"


def _is_number(value: str) -> bool:
    try:
        float(_UNCERTAINTY.sub("", value.strip("'\"")))
    except ValueError:
        return False
    return True
