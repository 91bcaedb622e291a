"""Readers of JSON Lines, CIF folders and ComputedStructureEntry files, on real rows and pymatgen-built files."""

from __future__ import annotations

import bz2
import gzip
import json
from itertools import islice
from pathlib import Path

import pytest
from monty.serialization import dumpfn
from pymatgen.core import Lattice, Structure
from pymatgen.entries.computed_entries import ComputedStructureEntry

from cgat_dgl.data.readers import detect_format, load_records, read_records
from cgat_dgl.data.records import DataError

PROPERTIES = ("e_form_pbe", "gap_pbe", "volume_pbe", "gap_hse", "e_form_r2scan", "e_form_expt")


def raw_rows(path: Path, count: int) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in islice(handle, count)]


def structures() -> dict[str, Structure]:
    return {
        "nacl": Structure(Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
        "si": Structure(Lattice.cubic(5.43), ["Si", "Si"], [[0, 0, 0], [0.25, 0.25, 0.25]]),
        "fe2o3": Structure(
            Lattice.hexagonal(5.0, 13.7),
            ["Fe", "Fe", "O", "O", "O"],
            [[0, 0, 0.35], [0, 0, 0.85], [0.3, 0, 0.25], [0, 0.3, 0.25], [0.7, 0.7, 0.25]],
        ),
    }


def write_cif_folder(folder: Path, table: str, ids: list[str] | None = None) -> dict[str, Structure]:
    folder.mkdir()
    built = structures()
    for name in ids if ids is not None else built:
        built[name].to(filename=str(folder / f"{name}.cif"))
    (folder / "id_prop.csv").write_text(table)
    return built


# --- JSON Lines ------------------------------------------------------------------------------------------


def test_jsonl_real_rows_keep_ids_sources_and_non_null_targets(shared_data_path: Path) -> None:
    rows = raw_rows(shared_data_path, 200)
    records = list(islice(read_records(shared_data_path), 200))
    assert [r.id for r in records] == [row["id"] for row in rows]
    for line, (record, row) in enumerate(zip(records, rows, strict=True), start=1):
        assert record.source == f"{shared_data_path}:{line}"
        assert record.kind == "cif" and record.payload == row["cif"]
        assert record.targets == {name: row[name] for name in PROPERTIES if row[name] is not None}
        assert "natoms" not in record.targets  # metadata, not a property
    # Structures are left unparsed; parsing on demand gives the stated number of sites.
    assert len(records[1].to_structure()) == rows[1]["natoms"]


def test_jsonl_requested_properties_only(shared_sample_path: Path) -> None:
    records = list(read_records(shared_sample_path, ["gap_hse", "natoms"]))
    rows = raw_rows(shared_sample_path, 10_000)
    assert len(records) == len(rows) == 300
    assert sum("gap_hse" in r.targets for r in records) == sum(row["gap_hse"] is not None for row in rows)
    assert all(set(r.targets) <= {"gap_hse", "natoms"} for r in records)
    assert [r.targets["natoms"] for r in records] == [float(row["natoms"]) for row in rows]


def test_load_records_counts_values_per_property(shared_sample_path: Path) -> None:
    records, report = load_records(shared_sample_path)
    rows = raw_rows(shared_sample_path, 10_000)
    assert report.read == report.kept == len(records) == len(rows)
    assert not report.dropped
    for name in PROPERTIES:
        assert report.per_property[name] == sum(row[name] is not None for row in rows)
    assert report.per_property["gap_hse"] < report.per_property["gap_pbe"]
    assert "gap_hse" in report.summary()


def test_unknown_property_names_it_and_lists_the_available_ones(shared_sample_path: Path) -> None:
    with pytest.raises(DataError) as caught:
        load_records(shared_sample_path, ["gap_pbe", "gap_hsee"], on_error="skip")
    message = str(caught.value)
    assert caught.value.reason == "unknown_property"
    assert "gap_hsee" in message and "gap_hse," in message and "e_form_pbe" in message
    assert str(shared_sample_path) in message


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.bz2", ".jsonl.gz"])
def test_jsonl_plain_and_compressed(tmp_path: Path, shared_sample_path: Path, suffix: str) -> None:
    lines = [json.dumps(row) + "\n" for row in raw_rows(shared_sample_path, 20)]
    path = tmp_path / f"rows{suffix}"
    opener = {".jsonl": open, ".jsonl.bz2": bz2.open, ".jsonl.gz": gzip.open}[suffix]
    with opener(path, "wt", encoding="utf-8") as out:
        out.write("\n")  # blank lines are skipped but still counted for line numbers
        out.writelines(lines)
    records = list(read_records(path, ["e_form_pbe"]))
    assert [r.id for r in records] == [json.loads(line)["id"] for line in lines]
    assert records[0].source == f"{path}:2"
    assert records[3].targets == {"e_form_pbe": json.loads(lines[3])["e_form_pbe"]}


def test_jsonl_structure_dict_rows(tmp_path: Path) -> None:
    path = tmp_path / "dicts.jsonl"
    salt = structures()["nacl"]
    path.write_text(json.dumps({"id": "nacl", "structure": salt.as_dict(), "band_gap": 5.0, "formula": "NaCl"}) + "\n")
    (record,) = read_records(path)
    assert record.kind == "structure_dict" and record.targets == {"band_gap": 5.0}
    assert record.to_structure() == salt


# --- CGCNN-style CIF folders -----------------------------------------------------------------------------


def test_cif_folder_headerless_rows(tmp_path: Path) -> None:
    folder = tmp_path / "cgcnn"
    built = write_cif_folder(folder, "nacl,1.5\nsi,0.6\n\nfe2o3,-2.25\n")
    records = list(read_records(folder))
    assert [r.id for r in records] == ["nacl", "si", "fe2o3"]
    assert [r.targets for r in records] == [{"target": 1.5}, {"target": 0.6}, {"target": -2.25}]
    assert records[2].source == str(folder / "fe2o3.cif")
    assert records[2].target_source == f"{folder / 'id_prop.csv'}:4"
    parsed = records[2].to_structure()
    assert parsed.composition == built["fe2o3"].composition
    assert parsed.lattice.abc == pytest.approx(built["fe2o3"].lattice.abc)
    renamed = list(read_records(folder, target_name="band_gap"))
    assert renamed[0].targets == {"band_gap": 1.5}


def test_cif_folder_with_header_and_sparse_values(tmp_path: Path) -> None:
    folder = tmp_path / "cgcnn"
    write_cif_folder(folder, "material_id,e_form,gap\nnacl,-2.1,5.0\nsi,,0.6\nfe2o3,-1.7,\n")
    records, report = load_records(folder)
    assert [r.targets for r in records] == [{"e_form": -2.1, "gap": 5.0}, {"gap": 0.6}, {"e_form": -1.7}]
    assert report.per_property == {"e_form": 2, "gap": 2}
    only_gap = list(read_records(folder, ["gap"]))
    assert [r.targets for r in only_gap] == [{"gap": 5.0}, {"gap": 0.6}, {}]
    with pytest.raises(DataError, match="'band_gap'.*available: e_form, gap"):
        list(read_records(folder, ["band_gap"]))


def test_cif_folder_bad_value_names_the_line(tmp_path: Path) -> None:
    folder = tmp_path / "cgcnn"
    write_cif_folder(folder, "nacl,1.5\nsi,abc\n")
    with pytest.raises(DataError, match=r"id_prop\.csv:2 \(si\): malformed_line: property 'target'"):
        list(read_records(folder))


# --- ComputedStructureEntry files ------------------------------------------------------------------------


def entries() -> list[ComputedStructureEntry]:
    built = structures()
    return [
        ComputedStructureEntry(
            built["nacl"], -27.0, correction=-0.6, entry_id="mp-22862", data={"e_form": -2.1, "band_gap_ind": 5.0}
        ),
        ComputedStructureEntry(built["si"], -10.8, data={"mat_id": "agm002153973", "e_form": 0.0, "band_gap_ind": 0.6}),
        ComputedStructureEntry(built["fe2o3"], -38.5, data={"e_form": -1.7, "spg": 167}),
    ]


@pytest.mark.parametrize(
    ("name", "wrapped"), [("entries.json.bz2", True), ("list.json.bz2", False), ("entries.json.gz", True)]
)
def test_computed_structure_entries(tmp_path: Path, name: str, wrapped: bool) -> None:
    built = entries()
    path = tmp_path / name
    dumpfn({"entries": built} if wrapped else [e.as_dict() for e in built], path)
    assert detect_format(path) == "entries"
    records, report = load_records(path)
    assert [r.id for r in records] == ["mp-22862", "agm002153973", f"{name}#2"]
    assert [r.source for r in records] == [f"{path}#{i}" for i in range(3)]
    for record, entry in zip(records, built, strict=True):
        assert record.kind == "structure_dict"
        assert record.to_structure() == entry.structure
        assert record.targets["energy_per_atom"] == pytest.approx(entry.energy_per_atom)
        assert record.targets["e_form"] == entry.data["e_form"]
    assert records[0].targets["energy_per_atom"] == pytest.approx((-27.0 - 0.6) / 2)
    assert records[2].targets["spg"] == 167.0
    assert report.per_property == {"energy_per_atom": 3, "e_form": 3, "band_gap_ind": 2, "spg": 1}
    gaps = list(read_records(path, ["band_gap_ind"]))
    assert [r.targets for r in gaps] == [{"band_gap_ind": 5.0}, {"band_gap_ind": 0.6}, {}]


def test_entries_file_that_is_not_a_list(tmp_path: Path) -> None:
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"materials": []}))
    with pytest.raises(DataError, match="other.json: malformed_line: expected a list of entries"):
        list(read_records(path))


def test_unknown_format(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("id,value\n")
    with pytest.raises(DataError, match="unknown_format"):
        list(read_records(path))
