"""Splits: deterministic, disjoint, sized; stored once and reused; leakage removal; nested subsets."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from cgat_dgl.data.splits import (
    Split,
    SplitError,
    load_or_create_split,
    make_split,
    nested_subsets,
    remove_leakage,
)

IDS = [f"mp-{i}" for i in range(1, 1001)]


def shuffled(ids: list[str], seed: int) -> list[str]:
    copy = list(ids)
    random.Random(seed).shuffle(copy)
    return copy


def test_split_is_disjoint_complete_and_sized() -> None:
    split = make_split(IDS, seed=7)
    assert split.sizes() == (800, 100, 100)
    assert set(split.train).isdisjoint(split.val) and set(split.train).isdisjoint(split.test)
    assert set(split.val).isdisjoint(split.test)
    assert sorted(split.ids) == sorted(IDS)
    odd = make_split(IDS[:37], seed=1, fractions=(0.7, 0.2, 0.1))
    assert odd.sizes() == (37 - round(7.4) - round(3.7), round(7.4), round(3.7))


def test_split_depends_on_the_id_set_and_seed_only() -> None:
    split = make_split(IDS, seed=7)
    assert make_split(shuffled(IDS, 3), seed=7) == split
    assert make_split(tuple(reversed(IDS)), seed=7) == split
    other = make_split(IDS, seed=8)
    assert other != split and other.sizes() == split.sizes()


def test_split_rejects_duplicates_and_bad_fractions() -> None:
    with pytest.raises(ValueError, match="1 duplicate ids, e.g. mp-3"):
        make_split([*IDS[:10], "mp-3"], seed=0)
    with pytest.raises(ValueError, match="summing to 1"):
        make_split(IDS, seed=0, fractions=(0.8, 0.1, 0.2))


def test_split_file_is_written_once_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "splits" / "gap_pbe.json"
    first = load_or_create_split(path, IDS, seed=11)
    stored = json.loads(path.read_text())
    assert stored["seed"] == 11 and stored["fractions"] == [0.8, 0.1, 0.1] and stored["sizes"] == [800, 100, 100]
    assert len(stored["ids_hash"]) == 64
    assert [f.name for f in path.parent.iterdir()] == [path.name]  # no temporary file left behind

    # Reuse reads the file: a hand-edited (but consistent) split comes back as stored, not recomputed.
    moved = first.val[0]
    edited = Split(first.train + (moved,), first.val[1:], first.test)
    stored.update(train=list(edited.train), val=list(edited.val))
    path.write_text(json.dumps(stored))
    assert load_or_create_split(path, shuffled(IDS, 5), seed=11) == edited


def test_split_file_for_other_materials_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "gap_hse.json"
    load_or_create_split(path, IDS, seed=11)
    with pytest.raises(SplitError, match=rf"{path}: the split was made for a different set of m.*1 new, 1 missing"):
        load_or_create_split(path, [*IDS[1:], "mp-5000"], seed=11)
    with pytest.raises(SplitError, match=rf"{path}: the split was made with seed 11"):
        load_or_create_split(path, IDS, seed=12)
    with pytest.raises(SplitError, match="fractions"):
        load_or_create_split(path, IDS, seed=11, fractions=(0.6, 0.2, 0.2))


def test_corrupt_split_file(tmp_path: Path) -> None:
    path = tmp_path / "split.json"
    path.write_text("{not json")
    with pytest.raises(SplitError, match=rf"{path}: not a readable split file"):
        load_or_create_split(path, IDS, seed=0)
    split = make_split(IDS, seed=0)
    path.unlink()
    load_or_create_split(path, IDS, seed=0)
    stored = json.loads(path.read_text())
    stored["test"] = [*stored["test"], split.train[0]]  # one id in two parts
    path.write_text(json.dumps(stored))
    with pytest.raises(SplitError, match="more than one part"):
        load_or_create_split(path, IDS, seed=0)


def test_remove_leakage_from_every_part() -> None:
    pretrain = make_split(IDS, seed=1)
    target = make_split(IDS[::5], seed=2)  # a smaller high-fidelity set of the same materials
    result = remove_leakage(pretrain, target.val, target.test)
    cleaned, removed = result
    protected = set(target.val) | set(target.test)
    assert removed == result.removed == len(protected) == 40
    for part in (cleaned.train, cleaned.val, cleaned.test):
        assert protected.isdisjoint(part)
    assert set(cleaned.ids) == set(IDS) - protected
    # What was not protected stays in the part it was in.
    assert set(cleaned.train) == set(pretrain.train) - protected
    assert set(cleaned.val) == set(pretrain.val) - protected
    # The target's training materials may stay in pre-training: only its validation and test sets are held out.
    assert set(target.train) & set(cleaned.train)
    assert remove_leakage(pretrain, ["not-there"]) == (pretrain, 0)


def test_nested_subsets() -> None:
    subsets = nested_subsets(IDS, [50, 0.25, 500, 1.0], seed=3)
    assert list(subsets) == [50, 250, 500, 1000]
    assert [len(s) for s in subsets.values()] == [50, 250, 500, 1000]
    assert set(subsets[50]) < set(subsets[250]) < set(subsets[500]) < set(subsets[1000]) == set(IDS)
    assert nested_subsets(shuffled(IDS, 9), [50], seed=3)[50] == subsets[50]
    assert nested_subsets(IDS, [50], seed=4)[50] != subsets[50]
    with pytest.raises(ValueError, match="between 1 and 1000"):
        nested_subsets(IDS, [2000], seed=0)
    with pytest.raises(ValueError, match=r"fractional size must be in \(0, 1\]"):
        nested_subsets(IDS, [1.5], seed=0)


def test_evaluation_caps_draw_a_seeded_random_nested_subset() -> None:
    from benchmarks.datasets import evaluation_subset

    ids = [f"mp-{i:04d}" for i in range(200)]
    small, large = evaluation_subset(ids, 20, seed=0), evaluation_subset(ids, 50, seed=0)
    assert len(small) == 20 and len(large) == 50
    assert set(small) <= set(large)  # nested
    assert small != sorted(ids)[:20]  # not the alphabetically first materials
    assert max(small) > sorted(ids)[100]  # drawn from the whole split
    assert evaluation_subset(ids, 20, seed=0) == small
    assert evaluation_subset(ids, 20, seed=1) != small
    assert evaluation_subset(ids, None, seed=0) == ids
    assert evaluation_subset(ids, 500, seed=0) == ids
