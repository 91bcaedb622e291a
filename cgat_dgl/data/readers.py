"""Readers of three input formats into MaterialRecords, without parsing any structure.

- JSON Lines (optionally .gz, .bz2 or .xz): one object per line with an "id", a "cif" string (or a
  pymatgen "structure" dict) and property columns; null means absent. `natoms` is taken as metadata,
  not as a property, unless asked for by name.
- A CGCNN-style folder: `<id>.cif` files and `id_prop.csv`, either headerless `id,value` rows (the
  value is named by `target_name`) or with a header row naming the id column and the properties.
- pymatgen ComputedStructureEntry lists as JSON (optionally .gz, .bz2 or .xz), as published on
  Materials Cloud and in Alexandria: {"entries": [...]} or a bare list of entry dicts. Properties
  come from each entry's "data"; `energy_per_atom` is added from the entry's energy as pymatgen
  computes it, (energy + correction) / number of atoms, unless the data already has one.

Structures are parsed later (record.to_structure(), or validation.check_structure), so that a warm
graph cache never parses a CIF.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import json
import lzma
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any, Literal

from cgat_dgl.data.records import DataError, LoadReport, MaterialRecord
from cgat_dgl.data.validation import (
    MALFORMED_LINE,
    MISSING_FILE,
    UNKNOWN_PROPERTY,
    check_record,
    where,
)

InputFormat = Literal["jsonl", "cif_folder", "entries"]
OnError = Literal["raise", "skip"]

ID_PROP_FILE = "id_prop.csv"
_COMPRESSIONS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
# JSON Lines fields that are never properties unless asked for by name.
_JSONL_RESERVED = frozenset({"id", "material_id", "cif", "structure"})
_JSONL_METADATA = frozenset({"natoms"})


def detect_format(path: str | Path) -> InputFormat:
    """The input format of a path: a folder, *.jsonl[.gz|.bz2|.xz] or *.json[.gz|.bz2|.xz]."""
    path = Path(path)
    if path.is_dir():
        return "cif_folder"
    suffixes = path.suffixes
    if suffixes and suffixes[-1] in _COMPRESSIONS:
        suffixes = suffixes[:-1]
    if suffixes and suffixes[-1] == ".jsonl":
        return "jsonl"
    if suffixes and suffixes[-1] == ".json":
        return "entries"
    raise DataError(
        "unknown_format", str(path), "expected a folder with id_prop.csv, *.jsonl[.gz|.bz2] or *.json[.gz|.bz2]"
    )


def read_records(
    path: str | Path, properties: Sequence[str] | None = None, *, target_name: str = "target"
) -> Iterator[MaterialRecord]:
    """Yield the records of a file or folder, with the requested numeric properties as targets.

    properties=None takes every numeric property present. A requested property that no record has
    raises a DataError naming it and the available ones (once the input is read through). Bad records
    raise their DataError; load_records can skip and count them instead.
    """
    for item in _read_items(path, properties, target_name):
        if isinstance(item, DataError):
            raise item
        yield item


def _check_requested(path: Path, properties: Sequence[str] | None, seen: set[str]) -> None:
    """A requested name that the input never offered is a typo, not a sparse property."""
    missing = [name for name in properties or () if name not in seen]
    if missing:
        available = ", ".join(sorted(seen)) or "none"
        raise DataError(
            UNKNOWN_PROPERTY, str(path), f"no record has {', '.join(map(repr, missing))}; available: {available}"
        )


def _read_items(
    path: str | Path, properties: Sequence[str] | None, target_name: str
) -> Iterator[MaterialRecord | DataError]:
    """Records and record-level errors (skippable) in order; errors about the whole input are raised."""
    path = Path(path)
    if not path.exists():
        raise DataError(MISSING_FILE, str(path), "no such file or directory")
    if properties is not None:
        properties = list(dict.fromkeys(properties))
    seen: set[str] = set()  # property names the input offered, filled while reading
    fmt = detect_format(path)
    if fmt == "jsonl":
        yield from _read_jsonl(path, properties, seen)
    elif fmt == "cif_folder":
        yield from _read_cif_folder(path, properties, target_name, seen)
    else:
        yield from _read_entries(path, properties, seen)
    _check_requested(path, properties, seen)


def _open_text(path: Path) -> IO[str]:
    opener = _COMPRESSIONS.get(path.suffix)
    if opener is None:
        return open(path, encoding="utf-8")
    return opener(path, "rt", encoding="utf-8")


def _number(value: Any) -> float | None:
    """A property value as a float; None when absent; ValueError when it is not a number."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a number")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        return float(text) if text else None  # float() reads "nan" and "inf"; check_record rejects them
    raise ValueError(f"{value!r} is not a number")


def _is_numeric(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def _targets(
    fields: dict[str, Any], properties: Sequence[str] | None, reserved: frozenset[str], seen: set[str]
) -> dict[str, float]:
    """Numeric property values by name, absent values left out; ValueError names a bad one."""
    names = [k for k, v in fields.items() if k not in reserved and _is_numeric(v)]
    seen.update(names)
    if properties is None:
        return _values(fields, names)
    wanted = [name for name in properties if name in fields]
    seen.update(wanted)
    return _values(fields, wanted)


def _values(fields: dict[str, Any], names: Sequence[str]) -> dict[str, float]:
    targets = {}
    for name in names:
        try:
            value = _number(fields[name])
        except ValueError as exc:
            raise ValueError(f"property {name!r}: {exc}") from None
        if value is not None:
            targets[name] = value
    return targets


def _read_jsonl(path: Path, properties: Sequence[str] | None, seen: set[str]) -> Iterator[MaterialRecord | DataError]:
    reserved = _JSONL_RESERVED | (_JSONL_METADATA if properties is None else frozenset())
    with _open_text(path) as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            source = f"{path}:{line_number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                yield DataError(MALFORMED_LINE, source, f"not valid JSON: {exc}")
                continue
            if not isinstance(row, dict):
                yield DataError(MALFORMED_LINE, source, f"expected a JSON object, got {type(row).__name__}")
                continue
            record_id = row.get("id", row.get("material_id"))
            if record_id is None or str(record_id).strip() == "":
                yield DataError(MALFORMED_LINE, source, "no 'id' field")
                continue
            record_id = str(record_id)
            if isinstance(row.get("cif"), str):
                payload, kind = row["cif"], "cif"
            elif isinstance(row.get("structure"), dict):
                payload, kind = row["structure"], "structure_dict"
            else:
                yield DataError(MALFORMED_LINE, f"{source} ({record_id})", "no 'cif' text or 'structure' dict")
                continue
            try:
                targets = _targets(row, properties, reserved, seen)
            except ValueError as exc:
                yield DataError(MALFORMED_LINE, f"{source} ({record_id})", str(exc))
                continue
            yield MaterialRecord(id=record_id, source=source, targets=targets, payload=payload, kind=kind)


def _read_cif_folder(
    folder: Path, properties: Sequence[str] | None, target_name: str, seen: set[str]
) -> Iterator[MaterialRecord | DataError]:
    table = folder / ID_PROP_FILE
    if not table.is_file():
        raise DataError(MISSING_FILE, str(table), f"a CIF folder needs {ID_PROP_FILE} (rows 'id,value')")
    with open(table, encoding="utf-8", newline="") as handle:
        rows = [(n, [cell.strip() for cell in row]) for n, row in enumerate(csv.reader(handle), start=1)]
    rows = [(n, row) for n, row in rows if any(row)]
    if not rows:
        return
    names: list[str]
    first_line, first = rows[0]
    if _is_header(first):
        names = first[1:]
        if any(not name for name in names) or len(set(names)) != len(names):
            detail = f"header names must be distinct and non-empty: {first}"
            raise DataError(MALFORMED_LINE, f"{table}:{first_line}", detail)
        rows = rows[1:]
    else:
        names = [target_name]
    seen.update(names)
    for line_number, row in rows:
        source = f"{table}:{line_number}"
        if len(row) != len(names) + 1:
            hint = "" if len(names) > 1 or _is_header(first) else "; name several properties in a header row"
            yield DataError(MALFORMED_LINE, source, f"expected {len(names) + 1} columns, got {len(row)}{hint}")
            continue
        record_id = row[0]
        if not record_id:
            yield DataError(MALFORMED_LINE, source, "empty id")
            continue
        values = dict(zip(names, row[1:], strict=True))
        try:
            targets = _values(values, names if properties is None else [n for n in properties if n in values])
        except ValueError as exc:
            yield DataError(MALFORMED_LINE, f"{source} ({record_id})", str(exc))
            continue
        cif_path = folder / f"{record_id}.cif"
        try:
            text = cif_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            yield DataError(MISSING_FILE, f"{source} ({record_id})", f"{cif_path} does not exist")
            continue
        yield MaterialRecord(
            id=record_id, source=str(cif_path), targets=targets, payload=text, kind="cif", target_source=source
        )


def _is_header(row: list[str]) -> bool:
    """A first row is a header when some value after the id is neither empty nor a number."""
    for cell in row[1:]:
        if not cell:
            continue
        try:
            float(cell)
        except ValueError:
            return True
    return False


def _read_entries(path: Path, properties: Sequence[str] | None, seen: set[str]) -> Iterator[MaterialRecord | DataError]:
    # A plain dict read: millions of entries need no ComputedStructureEntry objects to give up their data.
    try:
        with _open_text(path) as handle:
            content = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError, OSError, EOFError) as exc:
        raise DataError(MALFORMED_LINE, str(path), f"not readable as JSON: {exc}") from exc
    entries = content.get("entries") if isinstance(content, dict) else content
    if not isinstance(entries, list):
        raise DataError(MALFORMED_LINE, str(path), "expected a list of entries or an object with an 'entries' list")
    for index, entry in enumerate(entries):
        source = f"{path}#{index}"
        if not isinstance(entry, dict) or not isinstance(entry.get("structure"), dict):
            yield DataError(MALFORMED_LINE, source, "not a ComputedStructureEntry dict with a 'structure'")
            continue
        data = entry.get("data") if isinstance(entry.get("data"), dict) else {}
        record_id = entry.get("entry_id") or data.get("mat_id") or f"{path.name}#{index}"
        fields = dict(data)
        if "energy_per_atom" not in fields and (energy := _energy_per_atom(entry)) is not None:
            fields["energy_per_atom"] = energy
        try:
            targets = _targets(fields, properties, frozenset(), seen)
        except ValueError as exc:
            yield DataError(MALFORMED_LINE, f"{source} ({record_id})", str(exc))
            continue
        yield MaterialRecord(
            id=str(record_id), source=source, targets=targets, payload=entry["structure"], kind="structure_dict"
        )


def _energy_per_atom(entry: dict[str, Any]) -> float | None:
    """(energy + correction) / atoms, as ComputedEntry.energy_per_atom; None when the entry lacks them."""
    energy, correction = entry.get("energy"), entry.get("correction", 0.0) or 0.0
    if not _is_numeric(energy) or energy is None or not _is_numeric(correction):
        return None
    composition = entry.get("composition")
    if isinstance(composition, dict) and composition:
        atoms = sum(float(v) for v in composition.values())
    else:
        sites = entry["structure"].get("sites", [])
        atoms = sum(float(species.get("occu", 1.0)) for site in sites for species in site.get("species", []))
    return (energy + correction) / atoms if atoms > 0 else None


def load_records(
    path: str | Path,
    properties: Sequence[str] | None = None,
    *,
    on_error: OnError = "raise",
    target_name: str = "target",
) -> tuple[list[MaterialRecord], LoadReport]:
    """Read all records, apply the record-level checks and count what was kept and dropped.

    on_error="raise" raises the first DataError; "skip" drops bad records and counts them by reason
    (a duplicate id keeps the first record). Problems with the input as a whole (a missing file, an
    unknown property, an unreadable entries file) raise either way.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
    report = LoadReport(path=str(path))
    records: list[MaterialRecord] = []
    first_seen: dict[str, str] = {}
    for item in _read_items(path, properties, target_name):
        report.read += 1
        error = item if isinstance(item, DataError) else check_record(item, first_seen)
        if error is not None:
            if on_error == "raise":
                raise error
            report.drop(error)
            continue
        assert isinstance(item, MaterialRecord)
        first_seen[item.id] = where(item, targets=True)
        records.append(item)
        report.kept += 1
        report.per_property.update(item.targets.keys())
    return records, report


__all__ = ["InputFormat", "OnError", "detect_format", "load_records", "read_records"]
