"""Train/validation/test splits chosen once with a fixed seed, stored, and reused by every experiment.

A split depends only on the set of ids and the seed (ids are sorted first), so the order in which a
reader yields records cannot change it. Split files hold the ids of each part, the seed, the fractions
and a hash of the id set; an existing file whose id set, seed or fractions differ is an error, never a
silent reshuffle.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from cgat_dgl.atomic import atomic_write

Fractions = tuple[float, float, float]
DEFAULT_FRACTIONS: Fractions = (0.8, 0.1, 0.1)
SPLIT_FORMAT = 1


class SplitError(ValueError):
    """A split file that does not match the data or the settings it is used with."""


@dataclass(frozen=True)
class Split:
    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]

    @property
    def ids(self) -> tuple[str, ...]:
        return self.train + self.val + self.test

    def sizes(self) -> tuple[int, int, int]:
        return len(self.train), len(self.val), len(self.test)


class LeakageRemoval(NamedTuple):
    split: Split
    removed: int  # materials taken out of the split, over its three parts


def ids_hash(ids: Iterable[str]) -> str:
    """A hash of a set of ids, independent of their order."""
    return hashlib.sha256("\n".join(sorted(set(ids))).encode()).hexdigest()


def _sorted_unique(ids: Sequence[str]) -> list[str]:
    unique = sorted(set(ids))
    if len(unique) != len(ids):
        duplicates = sorted(i for i, n in Counter(ids).items() if n > 1)
        raise ValueError(f"{len(ids) - len(unique)} duplicate ids, e.g. {', '.join(duplicates[:5])}")
    return unique


def _check_fractions(fractions: Sequence[float]) -> Fractions:
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-9:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {tuple(fractions)}")
    return (float(fractions[0]), float(fractions[1]), float(fractions[2]))


def make_split(ids: Sequence[str], seed: int, fractions: Sequence[float] = DEFAULT_FRACTIONS) -> Split:
    """A random split of the ids, the same for the same id set and seed.

    Validation and test sizes are the rounded fractions of the total; training takes the rest.
    """
    train_f, val_f, test_f = _check_fractions(fractions)
    unique = _sorted_unique(ids)
    order = np.random.default_rng(seed).permutation(len(unique))
    shuffled = [unique[i] for i in order]
    n_val = round(val_f * len(unique))
    n_test = round(test_f * len(unique))
    n_train = len(unique) - n_val - n_test
    return Split(
        train=tuple(sorted(shuffled[:n_train])),
        val=tuple(sorted(shuffled[n_train : n_train + n_val])),
        test=tuple(sorted(shuffled[n_train + n_val :])),
    )


def save_split(path: Path, split: Split, seed: int, fractions: Sequence[float]) -> None:
    """Write a split file atomically, so an interrupted write never leaves half a file."""
    content = {
        "format": SPLIT_FORMAT,
        "seed": seed,
        "fractions": list(_check_fractions(fractions)),
        "ids_hash": ids_hash(split.ids),
        "sizes": list(split.sizes()),
        "train": list(split.train),
        "val": list(split.val),
        "test": list(split.test),
    }
    with atomic_write(path, "w") as out:
        json.dump(content, out, indent=1)


def read_split(path: Path) -> tuple[Split, dict[str, object]]:
    """A split file's split and its settings (seed, fractions, ids_hash), checked for consistency."""
    try:
        content = json.loads(Path(path).read_text(encoding="utf-8"))
        split = Split(tuple(content["train"]), tuple(content["val"]), tuple(content["test"]))
        settings = {"seed": content["seed"], "fractions": tuple(content["fractions"]), "ids_hash": content["ids_hash"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SplitError(f"{path}: not a readable split file ({exc})") from exc
    if len(set(split.ids)) != len(split.ids):
        raise SplitError(f"{path}: an id appears in more than one part of the split")
    if ids_hash(split.ids) != settings["ids_hash"]:
        raise SplitError(f"{path}: the stored ids do not match the stored ids_hash; the file was edited")
    return split, settings


def load_or_create_split(
    path: Path, ids: Sequence[str], seed: int, fractions: Sequence[float] = DEFAULT_FRACTIONS
) -> Split:
    """The split stored at `path`, or a new one written there; the file must match the ids and settings."""
    path = Path(path)
    wanted = _check_fractions(fractions)
    if not path.exists():
        split = make_split(ids, seed, wanted)
        save_split(path, split, seed, wanted)
        return split
    split, settings = read_split(path)
    current = set(ids)
    if settings["ids_hash"] != ids_hash(current):
        stored = set(split.ids)
        raise SplitError(
            f"{path}: the split was made for a different set of materials ({len(stored)} stored, {len(current)} now; "
            f"{len(current - stored)} new, {len(stored - current)} missing). Delete it to make a new split, or use "
            "the data it was made for."
        )
    if settings["seed"] != seed or not np.allclose(settings["fractions"], wanted):
        raise SplitError(
            f"{path}: the split was made with seed {settings['seed']} and fractions {settings['fractions']}, "
            f"not seed {seed} and fractions {wanted}"
        )
    return split


def remove_leakage(pretrain: Split, *protected: Iterable[str]) -> LeakageRemoval:
    """Take the protected ids (a transfer task's validation and test sets) out of all parts of a split."""
    blocked: set[str] = set()
    for ids in protected:
        blocked.update(ids)
    kept = Split(
        train=tuple(i for i in pretrain.train if i not in blocked),
        val=tuple(i for i in pretrain.val if i not in blocked),
        test=tuple(i for i in pretrain.test if i not in blocked),
    )
    return LeakageRemoval(kept, len(pretrain.ids) - len(kept.ids))


def nested_subsets(ids: Sequence[str], sizes: Sequence[int | float], seed: int) -> dict[int, tuple[str, ...]]:
    """Subsets for data-size studies, keyed by size: each is a prefix of one seeded shuffle, so nested.

    A float size is a fraction of the ids (rounded); an int is a count.
    """
    unique = _sorted_unique(ids)
    order = np.random.default_rng(seed).permutation(len(unique))
    shuffled = [unique[i] for i in order]
    subsets: dict[int, tuple[str, ...]] = {}
    for size in sizes:
        if isinstance(size, float):
            if not 0.0 < size <= 1.0:
                raise ValueError(f"a fractional size must be in (0, 1], got {size}")
            count = round(size * len(unique))
        else:
            count = int(size)
        if not 0 < count <= len(unique):
            raise ValueError(f"size {size} gives {count} of {len(unique)} ids; it must be between 1 and {len(unique)}")
        subsets[count] = tuple(sorted(shuffled[:count]))
    return subsets
