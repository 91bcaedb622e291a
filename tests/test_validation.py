"""Bad input: each kind raises a DataError naming file, line and id, or is skipped and counted by reason."""

from __future__ import annotations

import gzip
import json
import re
import warnings
from itertools import islice
from pathlib import Path

import pytest
from pymatgen.core import Lattice, Structure

from cgat_dgl.data.p1_cif import parse_p1_cif
from cgat_dgl.data.readers import load_records, read_records
from cgat_dgl.data.records import DataError, LoadReport, MaterialRecord
from cgat_dgl.data.validation import check_structure


def real_rows(path: Path, count: int) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in islice(handle, count)]


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def cif_without_sites(cif: str) -> str:
    """The CIF with its atom-site loop emptied (header kept, rows gone)."""
    head, sites = cif.split("loop_\n _atom_site", 1)
    # pymatgen indents loop tags by one space and loop rows by two.
    return head + "loop_\n _atom_site" + "".join(l for l in sites.splitlines(keepends=True) if not l.startswith("  "))


@pytest.fixture()
def rows(shared_sample_path: Path) -> list[dict]:
    return real_rows(shared_sample_path, 6)


# --- record level: load_records ----------------------------------------------------------------------------


def test_nan_target_in_json_lines(tmp_path: Path, rows: list[dict]) -> None:
    good = [json.dumps(row) for row in rows[:3]]
    bad = json.dumps(dict(rows[3], gap_pbe=float("nan")))  # Python writes the NaN literal
    assert "NaN" in bad
    inf = json.dumps(rows[4]).replace('"gap_hse": null', '"gap_hse": Infinity')
    path = write_lines(tmp_path / "nan.jsonl", [*good, bad, inf])
    with pytest.raises(DataError) as caught:
        load_records(path)
    assert str(caught.value).startswith(f"{path}:4 ({rows[3]['id']}): nan_target: gap_pbe = nan")
    records, report = load_records(path, on_error="skip")
    assert [r.id for r in records] == [row["id"] for row in rows[:3]]
    assert report.read == 5 and report.kept == 3 and report.dropped == {"nan_target": 2}
    assert report.examples["nan_target"][1].startswith(f"{path}:5 ({rows[4]['id']})")
    # Only the requested properties count: without gap_pbe and gap_hse nothing is wrong.
    records, report = load_records(path, ["e_form_pbe"])
    assert report.kept == 5


def test_nan_target_in_id_prop_csv_names_the_csv_line(tmp_path: Path) -> None:
    folder = tmp_path / "cgcnn"
    folder.mkdir()
    for name, element in [("a", "Cu"), ("b", "Ag"), ("c", "Au")]:
        Structure(Lattice.cubic(3.6), [element], [[0, 0, 0]]).to(filename=str(folder / f"{name}.cif"))
    (folder / "id_prop.csv").write_text("a,0.1\nb,nan\nc,0.3\n")
    with pytest.raises(DataError, match=rf"^{folder / 'id_prop.csv'}:2 \(b\): nan_target"):
        load_records(folder)
    records, report = load_records(folder, on_error="skip")
    assert [r.id for r in records] == ["a", "c"] and report.dropped == {"nan_target": 1}


def test_duplicate_id_keeps_the_first(tmp_path: Path, rows: list[dict]) -> None:
    second = dict(rows[0], e_form_pbe=99.0)
    path = write_lines(tmp_path / "dup.jsonl", [json.dumps(rows[0]), json.dumps(rows[1]), json.dumps(second)])
    with pytest.raises(DataError) as caught:
        load_records(path)
    assert caught.value.reason == "duplicate_id"
    assert str(caught.value).startswith(f"{path}:3 ({rows[0]['id']}): duplicate_id: id already read at {path}:1")
    records, report = load_records(path, on_error="skip")
    assert [r.id for r in records] == [rows[0]["id"], rows[1]["id"]]
    assert records[0].targets["e_form_pbe"] == rows[0]["e_form_pbe"]
    assert report.dropped == {"duplicate_id": 1}


def test_malformed_json_line(tmp_path: Path, rows: list[dict]) -> None:
    no_id = json.dumps({k: v for k, v in rows[2].items() if k != "id"})
    path = write_lines(tmp_path / "broken.jsonl", [json.dumps(rows[0]), '{"id": "mp-x", "cif": ', no_id, "[1, 2]"])
    with pytest.raises(DataError, match=rf"^{path}:2: malformed_line: not valid JSON"):
        load_records(path)
    records, report = load_records(path, on_error="skip")
    assert [r.id for r in records] == [rows[0]["id"]]
    assert report.read == 4 and report.dropped == {"malformed_line": 3}
    assert any(f"{path}:3: malformed_line: no 'id'" in e for e in report.examples["malformed_line"])


def test_missing_input_file(tmp_path: Path) -> None:
    for on_error in ("raise", "skip"):
        with pytest.raises(DataError) as caught:
            load_records(tmp_path / "nowhere.jsonl.gz", on_error=on_error)  # type: ignore[arg-type]
        assert caught.value.reason == "missing_file" and "nowhere.jsonl.gz" in str(caught.value)
    (tmp_path / "empty_folder").mkdir()
    with pytest.raises(DataError, match=r"empty_folder/id_prop\.csv: missing_file"):
        load_records(tmp_path / "empty_folder", on_error="skip")


def test_missing_cif_named_in_id_prop(tmp_path: Path) -> None:
    folder = tmp_path / "cgcnn"
    folder.mkdir()
    Structure(Lattice.cubic(3.6), ["Cu"], [[0, 0, 0]]).to(filename=str(folder / "cu.cif"))
    (folder / "id_prop.csv").write_text("cu,0.0\nghost,1.0\n")
    with pytest.raises(DataError) as caught:
        load_records(folder)
    message = str(caught.value)
    assert caught.value.reason == "missing_file"
    assert message.startswith(f"{folder / 'id_prop.csv'}:2 (ghost): missing_file")
    assert str(folder / "ghost.cif") in message
    records, report = load_records(folder, on_error="skip")
    assert [r.id for r in records] == ["cu"] and report.dropped == {"missing_file": 1}


# --- structure level: check_structure ----------------------------------------------------------------------


def record(
    payload: object, kind: str = "cif", record_id: str = "mp-bad", source: str = "data.jsonl:17"
) -> MaterialRecord:
    return MaterialRecord(record_id, source, {"e": 0.0}, payload, kind)  # type: ignore[arg-type]


def bad_records(cif: str) -> dict[str, MaterialRecord]:
    """One record per structure-level failure, built from a real CIF or with pymatgen."""
    vacancy = Structure(Lattice.cubic(2.9), [{"Fe": 0.5}], [[0, 0, 0]])
    alloy = Structure(Lattice.cubic(3.6), [{"Cu": 0.5, "Au": 0.5}, "Cu"], [[0, 0, 0], [0.5, 0.5, 0]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pymatgen notes that Og has no electronegativity
        oganesson = Structure(Lattice.cubic(5.0), ["Og", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]).to(fmt="cif")
    empty = Structure(Lattice.cubic(3.0), ["Cu"], [[0, 0, 0]]).as_dict()
    empty["sites"] = []
    return {
        "malformed_cif": record("this is not a CIF\n"),
        "malformed_cif/truncated": record(cif[: cif.index("loop_\n _atom_site")]),
        "malformed_structure": record({"lattice": "none", "sites": [{"xyz": [0, 0, 0]}]}, kind="structure_dict"),
        "empty_structure": record(cif_without_sites(cif)),
        "empty_structure/dict": record(empty, kind="structure_dict"),
        "partial_occupancy": record(vacancy.to(fmt="cif")),
        "partial_occupancy/mixed": record(alloy.as_dict(), kind="structure_dict"),
        "unknown_element": record(oganesson),
        "unknown_element/dummy": record(cif.replace(" Cs  Cs0", " Xx  Xx0")),
    }


@pytest.mark.parametrize(
    "case",
    [
        "malformed_cif",
        "malformed_cif/truncated",
        "malformed_structure",
        "empty_structure",
        "empty_structure/dict",
        "partial_occupancy",
        "partial_occupancy/mixed",
        "unknown_element",
        "unknown_element/dummy",
    ],
)
def test_structure_failures_raise_with_file_line_and_id(
    rows: list[dict], case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert rows[0]["id"] == "mp-1" and " Cs  Cs0" in rows[0]["cif"]  # the CIF the cases are built from
    bad = bad_records(rows[0]["cif"])[case]
    with warnings.catch_warnings(record=True) as leaked:
        warnings.simplefilter("always")
        with pytest.raises(DataError) as caught:
            check_structure(bad)
    reason = case.split("/")[0]
    assert caught.value.reason == reason
    assert str(caught.value).startswith(f"data.jsonl:17 (mp-bad): {reason}: ")
    assert not leaked, [str(w.message) for w in leaked]  # pymatgen's warnings are captured, not shown
    assert capsys.readouterr() == ("", "")


def test_unknown_element_is_named(rows: list[dict]) -> None:
    with pytest.raises(DataError, match=r"unknown_element: no element embedding for Og \(Z=118\)"):
        check_structure(bad_records(rows[0]["cif"])["unknown_element"])
    with pytest.raises(DataError, match="unknown_element: .*Xx"):
        check_structure(bad_records(rows[0]["cif"])["unknown_element/dummy"])


SITE_ROW = "  Cs  Cs0  1  0.00000000  0.00000000  0.00000000  1\n"


def without_column(cif: str, column: str) -> str:
    """The CIF with one atom-site column gone: its header line and its value in the (only) row."""
    header = [line.strip() for line in cif.splitlines() if line.startswith(" _atom_site_")]
    values = SITE_ROW.split()
    del values[header.index(column)]
    return cif.replace(f" {column}\n", "").replace(SITE_ROW, "  " + "  ".join(values) + "\n")


def malformed_cifs(cif: str) -> dict[str, tuple[str, str]]:
    """Each common class of malformed CIF, made from the real 1-atom Cs CIF, with its readable reason."""
    assert cif.endswith(SITE_ROW)
    cell_lines = re.compile(r"_cell_(length|angle)_\w+\s+\S+\n")
    return {
        "empty": ("", "the CIF text is empty"),
        "blank": ("  \n\n", "the CIF text is empty"),
        "not_a_cif": ("this is not a CIF\n", "the text has no data_ block header, so it is not a CIF"),
        "no_cell": (cell_lines.sub("", cif), "the CIF has no cell parameters (_cell_length_a/b/c"),
        "one_cell_parameter_missing": (
            re.sub(r"_cell_angle_beta\s+\S+\n", "", cif),
            "the CIF has no _cell_angle_beta (all six cell parameters are needed)",
        ),
        "cell_parameter_not_a_number": (
            re.sub(r"_cell_length_b\s+\S+", "_cell_length_b   ?", cif),
            "the cell parameter _cell_length_b is '?', not a number",
        ),
        "no_loop": (cif[: cif.index("loop_")], "the CIF has no loop_ at all (an atom-site loop is needed)"),
        "truncated": (cif[: cif.index("loop_\n _atom_site")], "the CIF has no atom-site loop"),
        "no_label_column": (
            without_column(cif, "_atom_site_label"),
            "the atom-site loop has no _atom_site_label column",
        ),
        "no_coordinate_column": (
            without_column(cif, "_atom_site_fract_y"),
            "the atom-site loop has no _atom_site_fract_y column",
        ),
        "coordinate_not_a_number": (
            cif.replace(SITE_ROW, SITE_ROW.replace("1  0.00000000", "1  0.0.0", 1)),
            "site 1 of the atom-site loop has _atom_site_fract_x '0.0.0', not a number",
        ),
        "value_too_many": (
            cif + "  Cs\n",
            "the loop of _atom_site_type_symbol... has 8 values, not a multiple of its 7 columns",
        ),
        "degenerate_cell": (
            re.sub(r"_cell_length_a\s+\S+", "_cell_length_a   0", cif),
            "the cell is degenerate: its lattice matrix is singular",
        ),
    }


MALFORMED_CASES = (
    "empty",
    "blank",
    "not_a_cif",
    "no_cell",
    "one_cell_parameter_missing",
    "cell_parameter_not_a_number",
    "no_loop",
    "truncated",
    "no_label_column",
    "no_coordinate_column",
    "coordinate_not_a_number",
    "value_too_many",
    "degenerate_cell",
)


@pytest.mark.parametrize("case", MALFORMED_CASES)
def test_malformed_cifs_give_readable_reasons(rows: list[dict], case: str) -> None:
    cases = malformed_cifs(rows[0]["cif"])
    assert tuple(cases) == MALFORMED_CASES
    text, expected = cases[case]
    assert parse_p1_cif(text) is None  # the fast reader declines; pymatgen's failure is explained
    with warnings.catch_warnings(record=True) as leaked:
        warnings.simplefilter("always")
        with pytest.raises(DataError) as caught:
            check_structure(record(text))
    assert not leaked
    assert caught.value.reason == "malformed_cif"
    assert str(caught.value).startswith(f"data.jsonl:17 (mp-bad): malformed_cif: {expected}"), str(caught.value)
    assert not re.search(r"^'\w+'$|Invalid CIF file|could not convert|len\(items\)", caught.value.detail)


def test_unexplained_cif_failures_still_quote_the_parser(rows: list[dict]) -> None:
    # Every part in place, but a number for an element symbol: no reason fits, pymatgen's words are kept.
    cif = rows[0]["cif"].replace("  Cs  Cs0", "  12  120")
    with pytest.raises(DataError) as caught:
        check_structure(record(cif))
    assert caught.value.reason == "malformed_cif"
    assert caught.value.detail.startswith("Invalid CIF file with no structures")


def test_structure_failures_skipped_and_counted(rows: list[dict]) -> None:
    """The graph builder's use: drop what fails, count it by reason, keep the rest."""
    good = [record(row["cif"], record_id=row["id"], source=f"data.jsonl:{n}") for n, row in enumerate(rows, start=1)]
    mixed = good[:3] + list(bad_records(rows[0]["cif"]).values()) + good[3:]
    report = LoadReport(path="data.jsonl")
    kept = []
    for item in mixed:
        try:
            kept.append((item.id, check_structure(item)))
        except DataError as error:
            report.drop(error)
    assert [i for i, _ in kept] == [row["id"] for row in rows]
    assert [len(s) for _, s in kept] == [row["natoms"] for row in rows]
    assert report.dropped == {
        "malformed_cif": 2,
        "malformed_structure": 1,
        "empty_structure": 2,
        "partial_occupancy": 2,
        "unknown_element": 2,
    }


def test_real_structures_pass(shared_sample_path: Path) -> None:
    records = list(islice(read_records(shared_sample_path), 40))
    rows = real_rows(shared_sample_path, 40)
    for rec, row in zip(records, rows, strict=True):
        structure = check_structure(rec)
        assert len(structure) == row["natoms"]
        assert structure.volume / len(structure) == pytest.approx(row["volume_pbe"], rel=1e-6)
