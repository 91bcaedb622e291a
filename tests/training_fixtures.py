"""Small sets of real crystals from the shared file, as graph datasets, for the training tests."""

from __future__ import annotations

import gzip
import json
import os
import tempfile
import warnings
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

import pytest
import torch
from pymatgen.core import Structure

from cgat_dgl.data.dataset import GraphDataset
from cgat_dgl.graphs.build import build_crystal_graph
from cgat_dgl.graphs.neighbors import GraphParams

DEFAULT_SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mp_multifidelity.jsonl.gz"
MAX_ATOMS = 8  # small cells keep the smoke-sized model fast


def shared_data_file() -> Path:
    return Path(os.environ.get("CGAT_SHARED_DATA", DEFAULT_SHARED_DATA))


@lru_cache(maxsize=8)
def real_rows(count: int, prop: str, max_atoms: int = MAX_ATOMS) -> tuple[dict, ...]:
    """The first ``count`` rows of the shared file that have ``prop`` and at most ``max_atoms`` sites."""
    rows: list[dict] = []
    with gzip.open(shared_data_file(), "rt", encoding="utf-8") as stream:
        for line in stream:
            row = json.loads(line)
            if row[prop] is not None and row["natoms"] <= max_atoms:
                rows.append(row)
                if len(rows) == count:
                    return tuple(rows)
    raise ValueError(f"only {len(rows)} rows with {prop} and <= {max_atoms} atoms in {shared_data_file()}")


@lru_cache(maxsize=8)
def real_dataset(count: int, prop: str = "e_form_pbe", max_atoms: int = MAX_ATOMS) -> GraphDataset:
    rows = real_rows(count, prop, max_atoms)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the CIF parser's notes on rounded coordinates
        graphs = [build_crystal_graph(r["id"], Structure.from_str(r["cif"], fmt="cif"), GraphParams()) for r in rows]
    return GraphDataset([r["id"] for r in rows], graphs, [r[prop] for r in rows])


def three_sets(count: int, prop: str = "e_form_pbe") -> tuple[GraphDataset, GraphDataset, GraphDataset]:
    """Train (the first half), validation and test (a quarter each) of ``count`` real crystals."""
    data = real_dataset(count, prop)
    half, three_quarters = count // 2, (3 * count) // 4
    return (
        data.subset(data.ids[:half]),
        data.subset(data.ids[half:three_quarters]),
        data.subset(data.ids[three_quarters:]),
    )


def write_jsonl(path: Path, rows: tuple[dict, ...]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@lru_cache(maxsize=2)
def pretrained_checkpoint(epochs: int = 2) -> Path:
    """A smoke-sized model pre-trained on e_form_pbe of 24 real crystals (made once per test session)."""
    from cgat_dgl.model import ModelConfig
    from cgat_dgl.training.config import TrainConfig
    from cgat_dgl.training.trainer import train

    out = Path(tempfile.mkdtemp(prefix="cgat-pretrained-"))
    config = TrainConfig(epochs=epochs, batch_size=6, lr=3e-3, cycle_period=4, device="cpu", seed=0)
    return train(ModelConfig.preset("smoke"), config, *three_sets(24), out_dir=out).checkpoint


@pytest.fixture(scope="module")
def single_thread() -> Iterator[None]:
    """Smoke-sized steps are far faster on one thread than split over busy cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@lru_cache(maxsize=1)
def tracking_store() -> str:
    """One temporary SQLite MLflow store per test session (creating its tables takes seconds)."""
    return f"sqlite:///{Path(tempfile.mkdtemp(prefix='cgat-mlflow-')) / 'mlflow.db'}"
