"""Summary of a data file as the benchmark sees it: what was read, kept and dropped, and graph sizes.

``python -m benchmarks.summary --data PATH [--cache-dir DIR] [--workers N]``
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cgat_dgl.data.dataset import LoadedData, load_dataset

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA_ENV = "CGAT_SHARED_DATA"


def default_data_path() -> Path:
    """$CGAT_SHARED_DATA, else the shared data file beside the repository."""
    env = os.environ.get(SHARED_DATA_ENV)
    if env:
        return Path(env)
    return REPO_ROOT.parent / "shared" / "data" / "mp_multifidelity.jsonl.gz"


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", type=Path, default=None, help=f"data file (default: ${SHARED_DATA_ENV} or {default_data_path()})"
    )
    # relative to the working directory (as `cgat train`'s), not the package: an install is read-only
    parser.add_argument("--cache-dir", type=Path, default=Path("cache"), help="graph cache folder (default: ./cache)")
    parser.add_argument("--workers", type=int, default=None, help="graph build processes (default: all cores)")


@dataclass
class DatasetSummary:
    data: LoadedData
    seconds: float

    def text(self) -> str:
        report, stats = self.data.report, self.data.stats
        atoms = np.fromiter((g.num_atoms for g in self.data.graphs.values()), dtype=np.int64)
        lines = [report.summary()]
        if atoms.size:
            lines.append(f"  atoms per structure: median {np.median(atoms):g}, max {atoms.max()}")
        lines.append(
            f"  graphs: {stats.built} structures built, {stats.cached} loaded from the cache, "
            f"in {stats.graphs_s:.1f} s (records read in {stats.read_s:.1f} s; {self.seconds:.1f} s in all)"
        )
        return "\n".join(lines)


def summarize(data_path: Path | None, cache_dir: Path | None, workers: int | None = None) -> DatasetSummary:
    path = data_path if data_path is not None else default_data_path()
    if not path.exists():
        raise FileNotFoundError(f"data file {path} not found (pass --data or set ${SHARED_DATA_ENV})")
    start = time.perf_counter()
    data = load_dataset(path, cache_dir=cache_dir, workers=workers)
    seconds = time.perf_counter() - start
    return DatasetSummary(data, seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.summary", description=__doc__.splitlines()[0])
    add_data_arguments(parser)
    args = parser.parse_args(argv)
    print(summarize(args.data, args.cache_dir, args.workers).text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
