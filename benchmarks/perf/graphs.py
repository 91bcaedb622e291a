"""Speed of the graph pipeline: neighbour search against the reference procedure, full build, cache load.

    python -m benchmarks.perf.graphs [--data PATH] [--sample 2000] [--naive 200] [--workers N]

1. Builds the graphs of the whole file into an empty temporary cache with all workers, then
   loads them again from that cache, timing both through ``load_dataset``; reports the peak
   memory of that phase. On a busy machine the CPU time says more than the wall time.
2. Parses ``--sample`` CIFs of the shared file once as the build does (the fast P1 reader, pymatgen
   for any other CIF), then again with pymatgen's parser alone; both rates are reported.
3. Times our neighbour + rank step on all of them, and the reference procedure (all neighbours
   within 18 Å as pymatgen objects, sorted per site) on a random subset of ``--naive`` of them,
   which it is too slow to run on all; the speed-up compares both on that same subset.
   Both results are checked to agree on the subset (equal up to ties at the cut-off).
Results go to ``benchmarks/results/graphs.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from pymatgen.core import Structure
from threadpoolctl import threadpool_limits

from benchmarks.summary import default_data_path
from cgat_dgl.data.dataset import load_dataset
from cgat_dgl.data.readers import read_records
from cgat_dgl.graphs.neighbors import edge_differences, naive_reference_neighbors, nearest_neighbor_table

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "graphs.json"


def peak_rss_mb() -> float:
    """Peak resident memory of this process plus that of its largest finished child (Linux: KiB)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (own + children) / 1024.0


def sample_structures(path: Path, count: int, seed: int) -> tuple[list[str], list[Structure], float, float]:
    """A random sample's ids and structures, and the seconds to parse it with our reader and with pymatgen's."""
    records = list(read_records(path, None))
    chosen = sorted(random.Random(seed).sample(range(len(records)), min(count, len(records))))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        structures = [records[i].to_structure() for i in chosen]
        parse_s = time.perf_counter() - start
        start = time.perf_counter()
        for i in chosen:
            Structure.from_str(records[i].payload, fmt="cif")
        pymatgen_parse_s = time.perf_counter() - start
    return [records[i].id for i in chosen], structures, parse_s, pymatgen_parse_s


def neighbour_benchmark(ids: list[str], structures: list[Structure], naive_count: int, seed: int) -> dict[str, Any]:
    start = time.perf_counter()
    ours = [nearest_neighbor_table(structure) for structure in structures]
    ours_s = time.perf_counter() - start

    subset = sorted(random.Random(seed + 1).sample(range(len(structures)), min(naive_count, len(structures))))
    start = time.perf_counter()
    for i in subset:
        nearest_neighbor_table(structures[i])
    ours_subset_s = time.perf_counter() - start
    start = time.perf_counter()
    reference = [naive_reference_neighbors(structures[i]) for i in subset]
    naive_s = time.perf_counter() - start

    mismatched = {}
    for i, ref in zip(subset, reference):
        problems = edge_differences(ours[i], ref)
        if problems:
            mismatched[ids[i]] = problems[:3]
    return {
        "sample": len(structures),
        "naive_subset": len(subset),
        "ours_structs_per_s": len(structures) / ours_s,
        "ours_subset_structs_per_s": len(subset) / ours_subset_s,
        "naive_structs_per_s": len(subset) / naive_s,
        "speedup_vs_naive": naive_s / ours_subset_s,
        "mismatched_structures": len(mismatched),
        "mismatch_examples": dict(list(mismatched.items())[:5]),
    }


def cpu_seconds() -> float:
    """CPU time used so far by this process and its finished children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def cache_benchmark(path: Path, workers: int | None) -> dict[str, Any]:
    workers = workers or os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="graph-cache-") as cache_dir:
        load_before = os.getloadavg()[0]
        start, cpu_start = time.perf_counter(), cpu_seconds()
        built = load_dataset(path, cache_dir=Path(cache_dir), workers=workers, progress=True)
        full_build_s = time.perf_counter() - start
        full_build_cpu_s = cpu_seconds() - cpu_start
        load_after = os.getloadavg()[0]
        del built
        start = time.perf_counter()
        loaded = load_dataset(path, cache_dir=Path(cache_dir), workers=workers, progress=False)
        cache_load_s = time.perf_counter() - start
        cache_mb = sum(f.stat().st_size for f in Path(cache_dir).rglob("*") if f.is_file()) / 2**20
    return {
        "full_build_s": full_build_s,
        # On a busy machine the wall time says little; the CPU time spread over the workers says
        # what an otherwise idle machine with that many cores would take.
        "full_build_cpu_s": full_build_cpu_s,
        "full_build_idle_estimate_s": full_build_cpu_s / workers,
        "load_average_during_build": [load_before, load_after],
        "cache_load_s": cache_load_s,
        "cache_load_read_records_s": loaded.stats.read_s,
        "cache_load_graphs_s": loaded.stats.graphs_s,
        "graphs_built_on_load": loaded.stats.built,
        "graphs": len(loaded.graphs),
        "records_read": loaded.report.read,
        "dropped": dict(loaded.report.dropped),
        "cache_mb": cache_mb,
        "workers": workers,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.perf.graphs", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--sample", type=int, default=2000, help="structures for the neighbour timing")
    parser.add_argument("--naive", type=int, default=200, help="of those, how many run the reference way")
    parser.add_argument("--workers", type=int, default=None, help="build processes (default: all cores)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-full", action="store_true", help="skip the full build and cache load")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    path = args.data if args.data is not None else default_data_path()
    results: dict[str, Any] = {
        "data": str(path),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "load_average_at_start": os.getloadavg()[0],
    }
    # The full build runs first, so that the peak memory it reports is its own: the reference
    # procedure below holds millions of neighbour objects and would dominate it.
    if not args.skip_full:
        results.update(cache_benchmark(path, args.workers))
        results["peak_rss_mb"] = peak_rss_mb()
        print(
            f"full build of {results['records_read']} structures ({results['workers']} workers): "
            f"{results['full_build_s']:.1f} s wall, {results['full_build_cpu_s']:.0f} s CPU "
            f"(so about {results['full_build_idle_estimate_s']:.0f} s on {results['workers']} idle cores; "
            f"load average {results['load_average_during_build'][0]:.1f} before, "
            f"{results['load_average_during_build'][1]:.1f} after); cache load: {results['cache_load_s']:.1f} s "
            f"(records {results['cache_load_read_records_s']:.1f} s, graphs {results['cache_load_graphs_s']:.1f} s); "
            f"cache {results['cache_mb']:.0f} MB; peak memory (self + largest child) {results['peak_rss_mb']:.0f} MB"
        )

    # One BLAS thread, as in the build workers: pymatgen's many 3x3 inversions only lose with more.
    with threadpool_limits(limits=1, user_api="blas"):
        ids, structures, parse_s, pymatgen_parse_s = sample_structures(path, args.sample, args.seed)
        neighbours = neighbour_benchmark(ids, structures, args.naive, args.seed)
    results["cif_parse_per_s"] = len(structures) / parse_s
    results["cif_parse_pymatgen_per_s"] = len(structures) / pymatgen_parse_s
    print(
        f"parsed {len(structures)} CIFs at {results['cif_parse_per_s']:.0f}/s "
        f"(pymatgen's parser alone: {results['cif_parse_pymatgen_per_s']:.0f}/s)"
    )
    results.update(neighbours)
    print(
        f"neighbours + ranks: ours {results['ours_structs_per_s']:.0f} structures/s on {results['sample']}; "
        f"reference way {results['naive_structs_per_s']:.1f} structures/s, timed on a random {results['naive_subset']} "
        f"of them (ours on those: {results['ours_subset_structs_per_s']:.0f}/s); "
        f"speed-up {results['speedup_vs_naive']:.0f}x"
    )
    print(f"structures whose edges differ beyond ties at the cut-off: {results['mismatched_structures']}")
    results["peak_rss_mb_with_reference"] = peak_rss_mb()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 1 if results["mismatched_structures"] else 0


if __name__ == "__main__":
    sys.exit(main())
