"""The one leakage rule of pre-training splits (``cgat_dgl.data.leakage``), which ``cgat-bench`` (and so
``cgat compare``, a manifest it runs) applies: the rule's split and the runner's on the same data, no
protected val/test material in any part of it, stored files named
by the protected set, and unknown protected names as errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks.datasets import TaskData
from benchmarks.manifest import load_manifest
from benchmarks.plan import expand, pretrain_protected, task_targets
from cgat_dgl.cli import main
from cgat_dgl.data.dataset import LoadedData
from cgat_dgl.data.leakage import (
    DEFAULT_PROTECTED,
    LeakageError,
    load_with_protected,
    pretrain_split_path,
    pretrain_split,
    property_ids,
    property_split,
    protected_properties,
    split_path,
)
from cgat_dgl.data.records import DataError, LoadReport
from cgat_dgl.data.splits import SplitError, read_split, save_split
from tests.training_fixtures import real_rows, write_jsonl

MANIFEST = """\
data: {{cache_dir: {cache}{extra}}}
profiles:
  smoke:
    model: smoke
    pretrain: {{epochs: 1, cycle_period: 1}}
    transfer: {{epochs: 1, cycle_period: 1}}
experiments:
  - name: r2scan
    source: e_form_pbe
    target: e_form_r2scan
  - name: expt
    source: e_form_pbe
    target: e_form_expt
  - name: gap
    source: gap_pbe
    target: volume_pbe
"""


def synthetic_data(count: int = 400, seed: int = 0) -> LoadedData:
    """``count`` materials with e_form_pbe and gap_pbe, two sparse targets that overlap, a sparse gap_hse
    (a default protected property that no task targets) and volume_pbe; placeholder graphs."""
    rng = np.random.default_rng(seed)
    ids = [f"mp-{i}" for i in range(count)]

    def sparse(share: float) -> np.ndarray:
        values = rng.normal(size=count)
        values[rng.random(count) > share] = np.nan
        return values

    targets = pd.DataFrame(
        {
            "e_form_pbe": rng.normal(size=count),
            "gap_pbe": rng.random(count),
            "volume_pbe": 10 + rng.random(count),
            "e_form_r2scan": sparse(0.3),
            "e_form_expt": sparse(0.3),
            "gap_hse": sparse(0.2),
        },
        index=pd.Index(ids, name="id"),
    )
    targets.loc["mp-0", "e_form_pbe"] = np.nan  # a material without the source value
    graphs = {graph_id: object() for graph_id in ids}
    return LoadedData(graphs=graphs, targets=targets, report=LoadReport(path="synthetic"))


def leakage_free(
    loaded: LoadedData, source: str, target: str, split_dir: Path, seed: int, protect: tuple[str, ...] | list[str] = ()
) -> tuple:
    """(pre-training split of ``source``, split of ``target``) by the rule's own functions."""
    protected = protected_properties(loaded, source, [target], protect)
    splits: dict = {}
    target_split = property_split(loaded, target, split_dir, seed, splits)
    return pretrain_split(loaded, source, protected, split_dir, seed, splits), target_split


def task_data(loaded: LoadedData, split_dir: Path, tmp_path: Path, extra: str = "") -> TaskData:
    """The benchmark's TaskData of MANIFEST over already loaded data."""
    manifest_path = tmp_path / "experiments.yaml"
    manifest_path.write_text(MANIFEST.format(cache=tmp_path / "cache", extra=extra))
    manifest = load_manifest(manifest_path)
    return TaskData(loaded, split_dir, 0, task_targets(manifest), tuple(manifest.data.protected_targets))


def test_the_rule_and_the_runner_pretrain_on_the_identical_split(tmp_path: Path) -> None:
    loaded = synthetic_data()
    bench = task_data(loaded, tmp_path / "bench", tmp_path)
    for target in ("e_form_r2scan", "e_form_expt"):
        rule_split, target_split = leakage_free(loaded, "e_form_pbe", target, tmp_path / f"cmp-{target}", 0)
        assert rule_split == bench.pretrain_split("e_form_pbe")
        assert target_split == bench.split(target)
    # Both protect the two targets and gap_hse (a default), and only those.
    assert bench.protected("e_form_pbe") == ("e_form_expt", "e_form_r2scan", "gap_hse")
    # A source whose task targets a property outside the defaults: a manifest names it in protected_targets.
    # Every material has volume_pbe here, so its validation and test sets are gap_pbe's own: both
    # refuse the pre-training the rule leaves without validation and test materials.
    with pytest.raises(LeakageError, match="pre-training on gap_pbe: no validation or test material"):
        leakage_free(loaded, "gap_pbe", "gap_hse", tmp_path / "cmp-gap", 0, ["volume_pbe"])
    with pytest.raises(LeakageError, match="volume_pbe"):
        bench.pretrain_split("gap_pbe")


def test_no_protected_val_or_test_material_in_any_part_of_the_pretraining_split(tmp_path: Path) -> None:
    loaded = synthetic_data()
    split_dir = tmp_path / "splits"
    pretrain, target = leakage_free(loaded, "e_form_pbe", "e_form_r2scan", split_dir, 0, ["volume_pbe"])
    protected = protected_properties(loaded, "e_form_pbe", ["e_form_r2scan"], ["volume_pbe"])
    assert protected == ("e_form_expt", "e_form_r2scan", "gap_hse", "volume_pbe")
    blocked: set[str] = set()
    for prop in protected:
        stored, _ = read_split(split_path(split_dir, prop, 0))
        blocked |= set(stored.val) | set(stored.test)
    assert set(target.val) | set(target.test) <= blocked
    for part in (pretrain.train, pretrain.val, pretrain.test):
        assert blocked.isdisjoint(part)
    # Nothing else was removed, and the split is over the materials with a source value and a graph.
    source_ids = set(property_ids(loaded, "e_form_pbe"))
    assert "mp-0" not in source_ids and len(source_ids) == 399
    assert set(pretrain.ids) == source_ids - blocked
    # The stored file is named by the protected set and is what was returned.
    stored, _ = read_split(pretrain_split_path(split_dir, "e_form_pbe", protected, 0))
    assert stored == pretrain


def test_split_files_follow_the_protected_set_and_a_changed_one_is_an_error(tmp_path: Path) -> None:
    loaded = synthetic_data()
    split_dir = tmp_path / "splits"
    narrow, _ = leakage_free(loaded, "e_form_pbe", "e_form_r2scan", split_dir, 0)
    wide, _ = leakage_free(loaded, "e_form_pbe", "e_form_r2scan", split_dir, 0, ["volume_pbe"])
    assert set(wide.ids) < set(narrow.ids)
    names = sorted(p.name for p in split_dir.glob("e_form_pbe-protected-*"))
    assert len(names) == 2  # one file per protected set, neither reused for the other
    assert pretrain_split_path(split_dir, "s", ["a", "b"], 0) == pretrain_split_path(split_dir, "s", ["b", "a"], 0)
    path = pretrain_split_path(split_dir, "e_form_pbe", ("e_form_expt", "e_form_r2scan", "gap_hse"), 0)
    assert read_split(path)[0] == narrow
    save_split(path, type(narrow)(narrow.train[1:], narrow.val, narrow.test), 0, (0.8, 0.1, 0.1))
    with pytest.raises(SplitError, match="differs from the leakage-free split"):
        leakage_free(loaded, "e_form_pbe", "e_form_r2scan", split_dir, 0)


def test_defaults_the_data_lacks_protect_nothing_and_the_source_is_never_protected() -> None:
    loaded = synthetic_data()
    loaded.targets = loaded.targets.drop(columns=["gap_hse"])
    loaded.targets["e_form_expt"] = np.nan  # a column without any value
    assert protected_properties(loaded, "e_form_pbe", ["e_form_r2scan"]) == ("e_form_r2scan",)
    assert protected_properties(loaded, "e_form_r2scan", ["e_form_pbe"], ["e_form_r2scan"]) == ("e_form_pbe",)
    assert set(DEFAULT_PROTECTED) == {"gap_hse", "e_form_r2scan", "e_form_expt"}


def test_an_unknown_protected_property_is_an_error_naming_it_and_the_available_ones(tmp_path: Path) -> None:
    loaded = synthetic_data()
    with pytest.raises(ValueError, match=r"unknown protected property 'gap_hsee'; available in synthetic: e_form_pbe"):
        leakage_free(loaded, "e_form_pbe", "e_form_r2scan", tmp_path, 0, ["gap_hsee"])
    with pytest.raises(ValueError, match=r"'gap_hsee'.*gap_hse"):
        task_data(loaded, tmp_path / "bench", tmp_path, extra=", protected_targets: [gap_hsee]").pretrain_split("gap_pbe")


def test_unknown_protected_names_fail_when_the_file_is_loaded(tmp_path: Path, capsys) -> None:
    data = write_jsonl(tmp_path / "tiny.jsonl", real_rows(6, "e_form_pbe"))
    code = main(["compare", "--data", str(data), "--source", "e_form_pbe", "--target", "gap_hse",
                 "--protect", "gap_hsee", "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "out")])  # fmt: skip
    error = capsys.readouterr().err
    assert code == 2
    assert "'gap_hsee'" in error and "available: " in error and "gap_hse" in error.split("available: ")[1]
    manifest_path = tmp_path / "experiments.yaml"
    manifest_path.write_text(MANIFEST.format(cache=tmp_path / "cache", extra=", protected_targets: [gap_hsee]"))
    with pytest.raises(DataError, match=r"'gap_hsee'; available: .*gap_hse"):
        TaskData.load(load_manifest(manifest_path), data, progress=False)


def test_loading_adds_the_defaults_the_file_offers(tmp_path: Path) -> None:
    rows = real_rows(6, "e_form_r2scan")
    full = load_with_protected(write_jsonl(tmp_path / "full.jsonl", rows), ["e_form_pbe"], cache_dir=None, progress=False)
    assert set(full.targets.columns) == {"e_form_pbe", *DEFAULT_PROTECTED}
    without = [{k: v for k, v in row.items() if k != "gap_hse"} for row in rows]
    path = write_jsonl(tmp_path / "without.jsonl", tuple(without))
    partial = load_with_protected(path, ["e_form_pbe"], cache_dir=None, progress=False)
    # On this path a default that the file names but never gives a value is left out too: it protects nothing.
    assert {"e_form_pbe", "e_form_r2scan"} <= set(partial.targets.columns) <= {"e_form_pbe", *DEFAULT_PROTECTED}
    assert "gap_hse" not in partial.targets.columns
    with pytest.raises(DataError, match="no record has 'gap_hse'"):
        load_with_protected(path, ["e_form_pbe", "gap_hse"], cache_dir=None, progress=False)


def test_the_rule_and_the_runner_agree_on_a_loaded_file(tmp_path: Path) -> None:
    """End to end from one file: the rule on the data loaded with its protected columns, and cgat-bench's TaskData."""
    seen: set[str] = set()
    rows = []
    for prop, count in (("e_form_r2scan", 12), ("e_form_expt", 12), ("gap_hse", 8), ("e_form_pbe", 20)):
        for row in real_rows(40, prop, max_atoms=4):
            if row["id"] not in seen and count:
                seen.add(row["id"])
                rows.append(row)
                count -= 1
    data = write_jsonl(tmp_path / "multi.jsonl", tuple(rows))
    manifest_path = tmp_path / "experiments.yaml"
    manifest_path.write_text(MANIFEST.format(cache=tmp_path / "cache", extra=""))
    manifest = load_manifest(manifest_path)
    bench = TaskData.load(manifest, data, progress=False)

    loaded = load_with_protected(data, ["e_form_pbe", "e_form_r2scan"], cache_dir=tmp_path / "cache", progress=False)
    rule_split, _ = leakage_free(loaded, "e_form_pbe", "e_form_r2scan", tmp_path / "rule", 0)
    assert rule_split == bench.pretrain_split("e_form_pbe")
    assert len(rule_split.ids) < len(rows)  # something was protected
    # The run key's protected set is the same rule before the data is known.
    assert set(bench.protected("e_form_pbe")) <= set(pretrain_protected(manifest, "e_form_pbe"))
    pretrains, _ = expand(manifest, "smoke")
    assert {p.prop: p.protected for p in pretrains}["e_form_pbe"] == ("e_form_expt", "e_form_r2scan", "gap_hse")
    assert json.loads(Path(
        pretrain_split_path(bench.split_dir, "e_form_pbe", bench.protected("e_form_pbe"), 0)
    ).read_text())["sizes"] == list(rule_split.sizes())


def test_a_seed_draws_its_own_nested_training_subsets_on_fixed_evaluation_sets(tmp_path: Path) -> None:
    data = task_data(synthetic_data(), tmp_path / "splits", tmp_path)
    target = "e_form_r2scan"

    def ids(size: int, seed: int) -> tuple[set[str], list[str], list[str]]:
        train, val, test = data.transfer_sets(target, size, None, None, subset_seed=seed)
        return set(train.ids), list(val.ids), list(test.ids)

    small0, val0, test0 = ids(20, 0)
    large0, *_ = ids(40, 0)
    small1, val1, test1 = ids(20, 1)
    assert small0 <= large0  # nested within a seed
    assert small0 != small1  # another seed, other training materials
    assert (val0, test0) == (val1, test1)  # the same evaluation sets for every seed
    assert ids(1.0, 0)[0] == ids(1.0, 1)[0]  # the whole training set is the whole training set


def test_a_task_above_a_threshold_keeps_the_split_and_only_its_materials_above(tmp_path: Path) -> None:
    bench = task_data(synthetic_data(), tmp_path / "bench", tmp_path)
    everything = bench.transfer_sets("e_form_r2scan", 1.0, None, None)
    above = bench.transfer_sets("e_form_r2scan", 1.0, None, None, above=0.0)
    for every, kept in zip(everything, above):
        assert len(kept) and all(value > 0 for value in kept.targets)
        # the same split, the materials above the threshold: none dropped, none moved between parts
        assert set(kept.ids) == {i for i, value in zip(every.ids, every.targets) if value > 0}
    with pytest.raises(ValueError, match="e_form_r2scan above 100.0"):
        bench.transfer_sets("e_form_r2scan", 1.0, None, None, above=100.0)


def test_a_pretraining_that_the_leakage_rule_empties_stops_the_plan_and_says_what_to_do(tmp_path: Path, capsys) -> None:
    from benchmarks.cli import main as bench

    data = write_jsonl(tmp_path / "all_hse.jsonl", real_rows(30, "gap_hse"))  # every material has the target
    manifest = tmp_path / "experiments.yaml"
    manifest.write_text(
        f"data: {{cache_dir: {tmp_path / 'cache'}}}\n"
        "profiles:\n  smoke:\n    model: smoke\n    pretrain: {epochs: 1}\n    transfer: {epochs: 1}\n"
        "experiments:\n  - {name: gap, source: gap_pbe, target: gap_hse}\n"
    )
    for extra in (["--dry-run"], []):
        code = bench(["run", str(manifest), "--data", str(data), "--work-dir", str(tmp_path / "work"),
                      "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--no-progress", *extra])
        error = capsys.readouterr().err
        assert code == 2
        assert "pre-training on gap_pbe: no validation or test material is left after the leakage rule" in error
        assert "gap_hse" in error and "protected_targets" in error
    assert not (tmp_path / "work" / "checkpoints").exists()  # nothing trained
