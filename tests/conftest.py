"""Fixtures shared by the test modules: where the real data lives, and a small sample of it."""

from __future__ import annotations

import cgat_dgl  # noqa: F401  (first: it pins the numeric settings before torch computes)

import gzip
import os
from itertools import islice
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SHARED_DATA = REPO_ROOT.parent / "shared" / "data" / "mp_multifidelity.jsonl.gz"
SAMPLE_LINES = 300


@pytest.fixture(scope="session")
def shared_data_path() -> Path:
    """The shared JSON Lines file: $CGAT_SHARED_DATA, or ../shared/data/ beside the checkout.

    A missing file fails the tests rather than skipping them: CI has the data, so its absence is a
    broken setup, not a reason to pass.
    """
    path = Path(os.environ.get("CGAT_SHARED_DATA", DEFAULT_SHARED_DATA))
    if not path.is_file():
        pytest.fail(
            f"shared data file not found: {path}. Set CGAT_SHARED_DATA to mp_multifidelity.jsonl.gz "
            f"or place it at {DEFAULT_SHARED_DATA}.",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def shared_sample_path(shared_data_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first SAMPLE_LINES lines of the shared file, as a gzipped JSON Lines file in a temporary folder."""
    path = tmp_path_factory.mktemp("shared_sample") / "sample.jsonl.gz"
    with gzip.open(shared_data_path, "rt", encoding="utf-8") as source, gzip.open(path, "wt", encoding="utf-8") as out:
        out.writelines(islice(source, SAMPLE_LINES))
    return path
