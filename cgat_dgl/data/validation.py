"""Checks of bad input: cheap record-level ones at load time, structure-level ones after parsing.

Every failure is a DataError whose reason is a short key (counted in a LoadReport) and whose source
names the file, line (or entry) and id, e.g. "data.jsonl:17 (mp-123): malformed_cif: ...".
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping

from pymatgen.core import Structure
from pymatgen.core.periodic_table import DummySpecies

from cgat_dgl.data.elements import supported_atomic_numbers
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
            reason = MALFORMED_CIF if record.kind == "cif" else MALFORMED_STRUCTURE
            raise DataError(reason, source, _explain(exc, [str(w.message) for w in caught])) from exc
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
