"""load_dataset end to end on a small JSON Lines file of real rows, and the per-property datasets."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Structure

import cgat_dgl.graphs.build as build_module
from cgat_dgl.data.dataset import GraphDataset, graph_composition, load_dataset
from cgat_dgl.data.records import DataError
from tests.graph_test_data import first_rows, rows_by_size

BAD_LINE = 23  # 1-based line of the row with a broken CIF


def data_rows(shared: Path) -> list[dict]:
    """50 real rows: the first of the file, and some with the sparse properties."""
    small = first_rows(shared, 40)
    sparse = [row for row in rows_by_size(shared, 400, largest=0, quantile=0.5) if row["gap_hse"] is not None]
    return small + [row for row in sparse if row["id"] not in {r["id"] for r in small}][:10]


@pytest.fixture
def data_file(tmp_path: Path, shared_data_path: Path) -> tuple[Path, list[dict]]:
    rows = data_rows(shared_data_path)
    assert len(rows) == 50
    bad = dict(rows[0], id="mp-broken", cif="data_broken\nthis is not CIF\n")
    lines = [json.dumps(row) for row in rows]
    lines.insert(BAD_LINE - 1, json.dumps(bad))
    path = tmp_path / "small.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path, rows


def test_load_dataset_end_to_end(data_file: tuple[Path, list[dict]], tmp_path: Path) -> None:
    path, rows = data_file
    data = load_dataset(path, ["e_form_pbe", "gap_hse"], cache_dir=tmp_path / "cache", progress=False)
    ids = [row["id"] for row in rows]
    assert list(data.targets.index) == ids and list(data.graphs) == ids
    assert list(data.targets.columns) == ["e_form_pbe", "gap_hse"]
    report = data.report
    assert report.read == 51 and report.kept == 50
    assert dict(report.dropped) == {"malformed_cif": 1}
    assert f"small.jsonl:{BAD_LINE}" in report.examples["malformed_cif"][0]
    hse = sum(row["gap_hse"] is not None for row in rows)
    assert report.per_property == {"e_form_pbe": 50, "gap_hse": hse} and 0 < hse < 50
    for row in rows:
        assert data.targets.at[row["id"], "e_form_pbe"] == pytest.approx(row["e_form_pbe"])
        value = data.targets.at[row["id"], "gap_hse"]
        assert math.isnan(value) if row["gap_hse"] is None else value == pytest.approx(row["gap_hse"])
        graph = data.graphs[row["id"]]
        assert graph.id == row["id"] and graph.num_atoms == row["natoms"] and graph.num_edges == 24 * row["natoms"]
    assert data.stats.built == 51 and data.stats.cached == 0

    dataset = data.dataset("gap_hse")
    assert isinstance(dataset, GraphDataset) and len(dataset) == hse
    graph, target = dataset[0]
    assert graph.id == dataset.ids[0] and isinstance(target, float)
    assert dataset.targets.dtype == np.float32
    assert target == pytest.approx(data.targets.at[dataset.ids[0], "gap_hse"])

    chosen = [ids[-1], ids[0], ids[-2]]  # ids[0] has no HSE gap: left out
    assert rows[0]["gap_hse"] is None
    picked = data.dataset("gap_hse", chosen)
    assert picked.ids == [i for i in chosen if rows[ids.index(i)]["gap_hse"] is not None]
    sub = dataset.subset(dataset.ids[:3][::-1])
    assert sub.ids == dataset.ids[:3][::-1] and sub[0][1] == pytest.approx(dataset[2][1])
    with pytest.raises(KeyError, match="volume_pbe"):
        data.dataset("volume_pbe")
    with pytest.raises(KeyError, match="nope"):
        dataset.subset(["nope"])


def test_warm_load_reports_the_same_and_builds_nothing(
    data_file: tuple[Path, list[dict]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = data_file
    cold = load_dataset(path, cache_dir=tmp_path / "cache", progress=False)

    def refuse(record: object) -> None:
        raise AssertionError("a cached structure was parsed")

    monkeypatch.setattr(build_module, "check_structure", refuse)
    warm = load_dataset(path, cache_dir=tmp_path / "cache", progress=False)
    assert warm.stats.built == 0 and warm.stats.cached == 51
    assert warm.report.dropped == cold.report.dropped and warm.report.kept == cold.report.kept == 50
    assert warm.report.per_property == cold.report.per_property
    assert warm.targets.equals(cold.targets)


def test_on_error_raise_raises_the_structure_error(data_file: tuple[Path, list[dict]], tmp_path: Path) -> None:
    path, _ = data_file
    with pytest.raises(DataError, match=f"small.jsonl:{BAD_LINE}") as caught:
        load_dataset(path, cache_dir=tmp_path / "cache", on_error="raise", progress=False)
    assert caught.value.reason == "malformed_cif"


def test_derived_energy_above_hull(data_file: tuple[Path, list[dict]], tmp_path: Path) -> None:
    path, rows = data_file
    data = load_dataset(path, ["gap_pbe"], cache_dir=tmp_path / "cache", derive_e_above_hull=True, progress=False)
    assert list(data.targets.columns) == ["gap_pbe", "e_above_hull_pbe"]
    hull = data.targets["e_above_hull_pbe"]
    assert hull.notna().all() and (hull > -1e-6).all() and (hull > 1e-3).any()
    by_id = {row["id"]: row for row in rows}
    # An elemental cell lies above the lower of its zero reference and the lowest cell of that element.
    elements = [i for i in data.targets.index if len(data.graphs[i].comp_elements) == 1]
    assert len(elements) >= 3, "the first rows of the file include elemental cells"
    for graph_id in elements:
        z = data.graphs[graph_id].comp_elements.tolist()
        same = [by_id[o]["e_form_pbe"] for o in elements if data.graphs[o].comp_elements.tolist() == z]
        expected = by_id[graph_id]["e_form_pbe"] - min(0.0, *same)
        assert hull[graph_id] == pytest.approx(expected, abs=1e-6)


def test_graph_composition_is_the_cell_composition(data_file: tuple[Path, list[dict]], tmp_path: Path) -> None:
    path, rows = data_file
    data = load_dataset(path, cache_dir=tmp_path / "cache", progress=False)
    for row in rows[::7]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            structure = Structure.from_str(row["cif"], fmt="cif")
        assert graph_composition(data.graphs[row["id"]]) == structure.composition


def test_bench_run_prints_the_data_summary(
    data_file: tuple[Path, list[dict]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from benchmarks.summary import main

    path, rows = data_file
    args = ["--data", str(path), "--cache-dir", str(tmp_path / "c")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "read 51, kept 50, dropped 1" in out
    assert "dropped (malformed_cif): 1" in out
    hse_line = next(line for line in out.splitlines() if "gap_hse" in line)
    assert hse_line.split() == ["gap_hse", str(sum(r["gap_hse"] is not None for r in rows)), "values"]
    sizes = sorted(row["natoms"] for row in rows)
    assert f"atoms per structure: median {np.median(sizes):g}, max {sizes[-1]}" in out
    assert "51 structures built, 0 loaded from the cache" in out
    assert main(args) == 0
    assert "0 structures built, 51 loaded from the cache" in capsys.readouterr().out
