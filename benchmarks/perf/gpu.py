"""Training throughput of the paper-size model on a GPU, and the epoch time it implies.

    python -m benchmarks.perf.gpu                       # paper preset on cuda: fp32, bf16, bf16 + compile
    python -m benchmarks.perf.gpu --device cpu --preset cpu --variants fp32   # the same on CPU

Made for a machine with an NVIDIA GPU and a recent CUDA torch but neither DGL nor pymatgen,
matminer or a package index: it uses the ``torch`` backend and the fast implementation, and
random crystal graphs shaped like the shared data (atoms per crystal drawn from its distribution,
24 neighbours per atom, elements drawn from the first 94), since throughput depends on the
graph sizes, not on the chemistry. Where matminer is missing the element table is a seeded
random stand-in of the same shape. Each variant runs for at most ``--seconds`` after warm-up, so
the whole command stays within a few minutes. Writes ``benchmarks/results/gpu.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.perf.device import synchronize
from cgat_dgl.graphs.batch import Batch
from cgat_dgl.graphs.collate import collate
from cgat_dgl.graphs.composition import composition_graph
from cgat_dgl.graphs.crystal_graph import CrystalGraph

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "gpu.json"
PAPER_EPOCH_STRUCTURES = 1_800_000
MAX_NBR = 24
# Atoms per structure in the shared file: quantiles 0, 10, ..., 100 % (median 20, mean ~25).
ATOM_QUANTILES = [1, 4, 6, 8, 12, 20, 20, 28, 36, 48, 200]


def _element_table_available() -> bool:
    try:
        from cgat_dgl.data.elements import matscholar_table

        matscholar_table()
        return True
    except ImportError:
        return False


def use_random_element_table() -> None:
    """Replace the matscholar table (matminer's data, pymatgen's element symbols) by random values."""
    import cgat_dgl.data.elements as elements

    table = np.random.default_rng(0).standard_normal((elements.MAX_Z + 1, elements.EMBEDDING_DIM))
    elements.matscholar_table = lambda: table.astype(np.float32)  # type: ignore[assignment]


def random_graph(index: int, rng: np.random.Generator) -> CrystalGraph:
    """A crystal graph of the builder's layout: max_nbr edges per atom, in sender order."""
    n = int(np.interp(rng.random(), np.linspace(0, 1, len(ATOM_QUANTILES)), ATOM_QUANTILES))
    atomic_numbers = rng.choice(np.arange(1, 95), size=min(n, 4), replace=False)
    atomic_numbers = rng.choice(atomic_numbers, size=n).astype(np.int16)
    composition = composition_graph(atomic_numbers)
    dst = rng.integers(0, n, size=n * MAX_NBR).astype(np.int32)
    rank = np.sort(rng.integers(1, MAX_NBR + 1, size=(n, MAX_NBR)), axis=1).reshape(-1)
    return CrystalGraph(
        id=f"random-{index}",
        atomic_numbers=atomic_numbers,
        edge_src=np.repeat(np.arange(n, dtype=np.int32), MAX_NBR),
        edge_dst=dst,
        edge_rank=rank.astype(np.int16),
        comp_elements=composition.elements,
        comp_fractions=composition.fractions,
        comp_src=composition.src,
        comp_dst=composition.dst,
    )


def run_variant(variant: str, batches: list[Batch], args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    from cgat_dgl.model import CGAT, ModelConfig

    config = ModelConfig.preset(args.preset, backend="torch", implementation="fast")
    torch.manual_seed(0)
    model = CGAT(config).to(device)
    # TrainConfig's defaults, spelt out: this script needs torch alone (no pydantic, DGL or pymatgen)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1.25e-4, weight_decay=1e-6)
    amp = variant.startswith("bf16")
    forward = torch.compile(model, dynamic=True) if variant.endswith("compile") else model

    def step(batch: Batch) -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            prediction = forward(batch)[:, 0].float()
        assert batch.targets is not None
        torch.nn.functional.l1_loss(prediction, batch.targets).backward()
        optimizer.step()

    start = time.perf_counter()
    for batch in batches[: args.warmup]:
        step(batch)
    synchronize(device)
    warmup_s = time.perf_counter() - start
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    structures = steps = 0
    start = time.perf_counter()
    while steps < args.steps and time.perf_counter() - start < args.seconds:
        batch = batches[steps % len(batches)]
        step(batch)
        structures += batch.num_crystals
        steps += 1
    synchronize(device)
    elapsed = time.perf_counter() - start
    rate = structures / elapsed
    return {
        "variant": variant,
        "parameters": model.count_parameters()["total"],
        "steps": steps,
        "warmup_s": warmup_s,
        "ms_per_step": 1000 * elapsed / steps,
        "structs_per_s": rate,
        "epoch_hours_1p8m": PAPER_EPOCH_STRUCTURES / rate / 3600,
        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="paper", choices=["paper", "cpu", "smoke"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--variants", default="fp32,bf16,bf16+compile",
                        help="comma-separated: fp32, bf16 (autocast), bf16+compile, fp32+compile")
    parser.add_argument("--batch-size", type=int, default=64, help="structures per step (64 per GPU in the reference)")
    parser.add_argument("--batches", type=int, default=8, help="distinct random batches cycled through")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps (compilation happens here)")
    parser.add_argument("--steps", type=int, default=200, help="most timed steps per variant")
    parser.add_argument("--seconds", type=float, default=30.0, help="most timed seconds per variant")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    real_elements = _element_table_available()
    if not real_elements:
        use_random_element_table()
    rng = np.random.default_rng(0)
    graphs = [random_graph(i, rng) for i in range(args.batch_size * args.batches)]
    items = [(g, float(rng.standard_normal())) for g in graphs]
    batches = [
        collate(items[i : i + args.batch_size], backend="torch").to(device)
        for i in range(0, len(items), args.batch_size)
    ]
    runs = []
    for variant in args.variants.split(","):
        try:
            runs.append(run_variant(variant.strip(), batches, args, device))
        except Exception as error:  # e.g. no compiler for torch.compile: report it, time the rest
            runs.append({"variant": variant.strip(), "error": f"{type(error).__name__}: {error}"[:500]})

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    mean_atoms = float(np.mean([g.num_atoms for g in graphs]))
    print(f"preset {args.preset} (torch backend, fast implementation) on {device} ({name}), torch {torch.__version__}; "
          f"batch {args.batch_size} random graphs, {mean_atoms:.1f} atoms on average"
          + ("" if real_elements else "; random element table (matminer not installed)"))
    print(f"{'variant':<14}{'struct/s':>10}{'ms/step':>9}{'warm-up s':>11}{'peak GiB':>10}{'epoch h (1.8M)':>16}")
    for run in runs:
        if "error" in run:
            print(f"{run['variant']:<14}failed: {run['error']}")
            continue
        peak = "-" if run["peak_memory_gib"] is None else f"{run['peak_memory_gib']:.1f}"
        print(f"{run['variant']:<14}{run['structs_per_s']:>10.1f}{run['ms_per_step']:>9.1f}"
              f"{run['warmup_s']:>11.1f}{peak:>10}{run['epoch_hours_1p8m']:>16.2f}")
    result = {
        "preset": args.preset, "device": str(device), "device_name": name, "torch": torch.__version__,
        "batch_size": args.batch_size, "mean_atoms": mean_atoms, "real_element_table": real_elements,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
