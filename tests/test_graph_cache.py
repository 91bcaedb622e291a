"""Graph building (atoms and composition), the on-disk cache: reuse, invalidation, failures, packs."""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

import cgat_dgl.graphs.build as build_module
import cgat_dgl.graphs.cache as cache_module
from cgat_dgl.data.records import MaterialRecord
from cgat_dgl.graphs.build import build_crystal_graph, graphs_for_records
from cgat_dgl.graphs.cache import CHECKSUM, CacheDamageWarning, GraphCache
from cgat_dgl.graphs.composition import composition_graph
from cgat_dgl.graphs.crystal_graph import CrystalGraph
from cgat_dgl.graphs.neighbors import GraphParams, nearest_neighbor_edges
from tests.graph_test_data import first_rows, record_of

GRAPH_FIELDS = (
    "atomic_numbers",
    "edge_src",
    "edge_dst",
    "edge_rank",
    "comp_elements",
    "comp_fractions",
    "comp_src",
    "comp_dst",
)


def assert_same_graph(a: CrystalGraph, b: CrystalGraph) -> None:
    for name in GRAPH_FIELDS:
        left, right = getattr(a, name), getattr(b, name)
        assert left.dtype == right.dtype, name
        np.testing.assert_array_equal(left, right, err_msg=name)


@pytest.fixture
def records(shared_data_path: Path) -> Callable[..., list[MaterialRecord]]:
    """Records of the first rows of the shared file (from row ``start``), as a reader would give them."""

    def make(count: int, start: int = 0) -> list[MaterialRecord]:
        rows = first_rows(shared_data_path, start + count)[start:]
        return [record_of(row, f"data.jsonl:{start + i + 1}") for i, row in enumerate(rows)]

    return make


def forbid_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(record: MaterialRecord) -> Structure:
        raise AssertionError(f"{record.id} was parsed although it is cached")

    monkeypatch.setattr(build_module, "check_structure", refuse)


def with_cif_changed(record: MaterialRecord) -> MaterialRecord:
    """The same material with its cell stretched by 2 % along a."""
    match = re.search(r"_cell_length_a\s+([0-9.]+)", record.payload)
    assert match
    stretched = record.payload.replace(match.group(0), f"_cell_length_a   {float(match.group(1)) * 1.02:.8f}")
    return replace(record, payload=stretched)


# --- composition graph and one crystal graph -------------------------------------------------


def test_composition_graph_of_a_ternary() -> None:
    # Ba Ti O3 given out of Z order: elements come back sorted by Z with their fractions.
    comp = composition_graph(np.array([22, 8, 56, 8, 8]))
    assert comp.elements.tolist() == [8, 22, 56]
    np.testing.assert_allclose(comp.fractions, [0.6, 0.2, 0.2], rtol=1e-6)
    assert comp.fractions.dtype == np.float32 and comp.fractions.sum() == pytest.approx(1.0, abs=1e-6)
    pairs = sorted(zip(comp.src.tolist(), comp.dst.tolist()))
    assert pairs == [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)]


def test_composition_graph_of_an_element_has_no_edges() -> None:
    comp = composition_graph(np.array([29, 29, 29, 29]))
    assert comp.elements.tolist() == [29] and comp.fractions.tolist() == [1.0]
    assert comp.src.size == 0 and comp.dst.size == 0
    with pytest.raises(ValueError):
        composition_graph(np.array([], dtype=np.int16))


def test_build_crystal_graph_of_rock_salt() -> None:
    structure = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    graph = build_crystal_graph("NaCl", structure, GraphParams())
    assert graph.id == "NaCl" and graph.num_atoms == 8 and graph.num_edges == 8 * 24
    assert graph.atomic_numbers.dtype == np.int16 and sorted(graph.atomic_numbers.tolist()) == [11] * 4 + [17] * 4
    src, dst, rank = nearest_neighbor_edges(structure)
    np.testing.assert_array_equal(graph.edge_src, src)
    np.testing.assert_array_equal(graph.edge_rank, rank)
    # The first shell of every atom is the 6 atoms of the other element.
    first = graph.edge_rank == 1
    assert np.all(graph.atomic_numbers[graph.edge_src[first]] != graph.atomic_numbers[graph.edge_dst[first]])
    assert graph.comp_elements.tolist() == [11, 17] and graph.comp_fractions.tolist() == [0.5, 0.5]
    small = build_crystal_graph("NaCl", structure, GraphParams(max_nbr=6))
    assert small.num_edges == 48 and set(small.edge_rank.tolist()) == {1}


# --- cache --------------------------------------------------------------------------------------


def test_second_load_builds_nothing_and_parses_nothing(
    records: MakeRecords, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recs = records(20)
    first = graphs_for_records(recs, cache_dir=tmp_path)
    assert first.built == 20 and first.cached == 0 and first.errors == []
    assert list(first.graphs) == [r.id for r in recs]
    forbid_parsing(monkeypatch)
    second = graphs_for_records(recs, cache_dir=tmp_path)
    assert second.built == 0 and second.cached == 20
    for record in recs:
        assert second.graphs[record.id].id == record.id
        assert_same_graph(first.graphs[record.id], second.graphs[record.id])


def test_changed_params_rebuild_everything(records: MakeRecords, tmp_path: Path) -> None:
    recs = records(10)
    graphs_for_records(recs, cache_dir=tmp_path)
    other = graphs_for_records(recs, GraphParams(max_nbr=12), cache_dir=tmp_path)
    assert other.built == 10
    assert all(g.num_edges == 12 * g.num_atoms for g in other.graphs.values())
    again = graphs_for_records(recs, GraphParams(max_nbr=12), cache_dir=tmp_path)
    assert again.built == 0


def test_changed_structure_rebuilds_only_it_and_new_records_are_added(records: MakeRecords, tmp_path: Path) -> None:
    recs = records(12)
    before = graphs_for_records(recs[:10], cache_dir=tmp_path)
    changed = [*recs[:10]]
    changed[3] = with_cif_changed(recs[3])
    changed += recs[10:]  # two new records
    after = graphs_for_records(changed, cache_dir=tmp_path)
    assert after.built == 3 and after.cached == 9
    for i in (0, 1, 2, 4, 5):
        assert_same_graph(before.graphs[recs[i].id], after.graphs[recs[i].id])
    assert graphs_for_records(changed, cache_dir=tmp_path).built == 0


def test_format_version_bump_rebuilds(records: MakeRecords, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recs = records(8)
    graphs_for_records(recs, cache_dir=tmp_path)
    monkeypatch.setattr(cache_module, "FORMAT_VERSION", cache_module.FORMAT_VERSION + 1)
    assert graphs_for_records(recs, cache_dir=tmp_path).built == 8
    assert len(list(tmp_path.iterdir())) == 2  # one folder per format version


def test_graphs_built_on_the_host_s_own_numpy_code_are_cached_apart(
    records: MakeRecords, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cgat_dgl import numerics

    recs = records(4)
    assert numerics.portable()
    graphs_for_records(recs, cache_dir=tmp_path)
    monkeypatch.setattr(numerics, "portable", lambda: False)  # e.g. CGAT_NUMERICS=native
    assert graphs_for_records(recs, cache_dir=tmp_path).built == 4
    folders = sorted(folder.name for folder in tmp_path.iterdir())
    assert len(folders) == 2 and "-host-" in folders[1] and folders[1].startswith(folders[0])


def test_failing_structures_are_remembered_with_their_reason(
    records: MakeRecords, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = records(5)
    cs = good[0]
    assert cs.id == "mp-1"  # a 1-atom Cs cell, occupancy 1 on its only site
    half = replace(cs, id="half-Cs", source="data.jsonl:90", payload=cs.payload.rstrip("\n")[:-1] + "0.5\n")
    broken = MaterialRecord("broken", "data.jsonl:91", {"e_form_pbe": 0.0}, "not a CIF at all\n", "cif")
    recs = [*good, half, broken]
    first = graphs_for_records(recs, cache_dir=tmp_path)
    reasons = {recs[i].id: error.reason for i, error in first.errors}
    assert reasons == {"half-Cs": "partial_occupancy", "broken": "malformed_cif"}
    assert [i for i, _ in first.errors] == [5, 6]
    assert "data.jsonl:91" in str(first.errors[1][1])
    assert set(first.graphs) == {r.id for r in good}

    forbid_parsing(monkeypatch)
    second = graphs_for_records(recs, cache_dir=tmp_path)
    assert second.built == 0 and second.cached == 7
    assert [(i, e.reason, str(e)) for i, e in second.errors] == [(i, e.reason, str(e)) for i, e in first.errors]


def test_same_structure_under_two_ids_is_built_once(records: MakeRecords, tmp_path: Path) -> None:
    rec = records(3)[2]
    twin = replace(rec, id="twin", source="data.jsonl:50")
    result = graphs_for_records([rec, twin], cache_dir=tmp_path)
    assert result.built == 1
    assert result.graphs["twin"].id == "twin" and result.graphs[rec.id].id == rec.id
    assert_same_graph(result.graphs["twin"], result.graphs[rec.id])


def test_truncated_pack_and_leftover_temp_file_are_skipped(records: MakeRecords, tmp_path: Path) -> None:
    recs = records(6)
    graphs_for_records(recs, cache_dir=tmp_path)
    cache = GraphCache(tmp_path, GraphParams())
    [pack] = cache.pack_paths()
    pack.write_bytes(pack.read_bytes()[:100])  # as if truncated
    (cache.directory / ".tmp-pack-killed.npz").write_bytes(b"partial")
    with pytest.warns(CacheDamageWarning, match=rf"damaged graph cache pack .*{re.escape(pack.name)}: unreadable"):
        rebuilt = graphs_for_records(recs, cache_dir=tmp_path)
    assert rebuilt.built == 6 and len(rebuilt.graphs) == 6


# --- damaged packs: found by name, moved aside, their graphs built again -------------------------


def two_pack_cache(records: MakeRecords, tmp_path: Path) -> tuple[list[MaterialRecord], dict[str, CrystalGraph], Path]:
    """A cache of 12 real graphs in two packs (6 each); the originals by id and the second pack."""
    recs = records(12)
    originals = {**graphs_for_records(recs[:6], cache_dir=tmp_path).graphs}
    originals.update(graphs_for_records(recs[6:], cache_dir=tmp_path).graphs)
    packs = GraphCache(tmp_path, GraphParams()).pack_paths()
    assert len(packs) == 2
    return recs, originals, packs[1]


def rewrite_pack(path: Path, change: Callable[[dict[str, np.ndarray]], object]) -> None:
    """Write the pack again, as a valid zip, with its arrays changed but its stored checksum kept."""
    with np.load(path) as data:
        arrays = {name: data[name] for name in data.files}
    change(arrays)
    with open(path, "wb") as stream:
        np.savez(stream, **arrays)


def assert_rebuilt_from_the_other_pack(
    recs: list[MaterialRecord], originals: dict[str, CrystalGraph], damaged: Path, tmp_path: Path, problem: str
) -> None:
    with pytest.warns(CacheDamageWarning) as caught:
        result = graphs_for_records(recs, cache_dir=tmp_path)
    [warning] = [str(w.message) for w in caught if issubclass(w.category, CacheDamageWarning)]
    assert str(damaged) in warning and re.search(problem, warning), warning
    assert "moved aside" in warning
    # Only the damaged pack's six structures are built again; none of its graphs is used.
    assert result.built == 6 and result.cached == 6 and result.errors == []
    assert list(result.graphs) == [r.id for r in recs]
    for record in recs:
        assert_same_graph(originals[record.id], result.graphs[record.id])
    assert not damaged.exists() and damaged.with_name(damaged.name + ".damaged").is_file()
    # The next load finds nothing wrong and builds nothing.
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheDamageWarning)
        again = graphs_for_records(recs, cache_dir=tmp_path)
    assert again.built == 0 and GraphCache(tmp_path, GraphParams()).unverified == []


def test_pack_with_14_bytes_overwritten_is_named_moved_aside_and_rebuilt(records: MakeRecords, tmp_path: Path) -> None:
    recs, originals, damaged = two_pack_cache(records, tmp_path)
    content = bytearray(damaged.read_bytes())
    middle = len(content) // 2
    content[middle : middle + 14] = bytes(255 - b for b in content[middle : middle + 14])  # surely different
    damaged.write_bytes(bytes(content))
    assert_rebuilt_from_the_other_pack(recs, originals, damaged, tmp_path, "unreadable.*CRC")


def test_pack_whose_arrays_do_not_match_its_checksum_is_rebuilt(records: MakeRecords, tmp_path: Path) -> None:
    recs, originals, damaged = two_pack_cache(records, tmp_path)

    def shift_one_edge(arrays: dict[str, np.ndarray]) -> None:
        arrays["edge_dst"][len(arrays["edge_dst"]) // 2] += 1  # a valid zip, a wrong graph

    rewrite_pack(damaged, shift_one_edge)
    assert_rebuilt_from_the_other_pack(recs, originals, damaged, tmp_path, "checksum mismatch")


def test_pack_missing_an_array_is_rebuilt(records: MakeRecords, tmp_path: Path) -> None:
    recs, originals, damaged = two_pack_cache(records, tmp_path)
    rewrite_pack(damaged, lambda arrays: arrays.pop("edge_rank"))
    assert_rebuilt_from_the_other_pack(recs, originals, damaged, tmp_path, "missing arrays edge_rank")


def test_packs_without_checksum_load_unverified_and_get_one_when_merged(
    records: MakeRecords, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recs, originals, second = two_pack_cache(records, tmp_path)
    rewrite_pack(second, lambda arrays: arrays.pop(CHECKSUM))  # as written before checksums
    forbid_parsing(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = graphs_for_records(recs, cache_dir=tmp_path)
    assert loaded.built == 0
    for record in recs:
        assert_same_graph(originals[record.id], loaded.graphs[record.id])
    cache = GraphCache(tmp_path, GraphParams())
    cache.load()
    assert cache.unverified == [second]
    cache.compact()
    [merged] = cache.pack_paths()
    with np.load(merged) as data:
        assert CHECKSUM in data.files
    assert cache.unverified == [] and len(cache) == 12


def test_packs_are_merged_when_they_pile_up(
    records: MakeRecords, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cache_module, "MAX_PACKS", 2)
    recs = records(8)
    built = {}
    for start in range(0, 8, 2):
        built.update(graphs_for_records(recs[start : start + 2], cache_dir=tmp_path).graphs)
    cache = GraphCache(tmp_path, GraphParams())
    assert 1 <= len(cache.pack_paths()) <= 2
    forbid_parsing(monkeypatch)
    loaded = graphs_for_records(recs, cache_dir=tmp_path)
    assert loaded.built == 0
    for record in recs:
        assert_same_graph(built[record.id], loaded.graphs[record.id])


def test_without_cache_dir_graphs_are_built_and_nothing_is_written(
    records: MakeRecords, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = graphs_for_records(records(4), cache_dir=None)
    assert result.built == 4 and len(result.graphs) == 4
    assert list(tmp_path.iterdir()) == []


def test_parallel_build_equals_serial_build(
    records: MakeRecords, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recs = records(40, start=100)
    serial = graphs_for_records(recs, cache_dir=None, workers=1)
    monkeypatch.setattr(build_module, "MIN_PARALLEL", 0)
    monkeypatch.setattr(build_module, "CHUNK_SIZE", 7)
    parallel = graphs_for_records(recs, cache_dir=tmp_path / "p", workers=2)
    assert parallel.built == 40 and list(parallel.graphs) == [r.id for r in recs]
    for record in recs:
        assert_same_graph(serial.graphs[record.id], parallel.graphs[record.id])
