"""Training-step throughput of the CGAT model on real graphs, for both message-passing backends.

    python -m benchmarks.perf.train                      # cpu preset, DGL and PyTorch, CPU
    python -m benchmarks.perf.train --preset paper --backend torch --device cuda

Times forward + backward + AdamW steps on pre-collated batches of real structures (collation is
timed separately), counts the model's matrix-multiply FLOPs of one step with
``torch.utils.flop_counter.FlopCounterMode`` and compares the achieved rate with a 2048 x 2048
float32 matrix multiply measured in the same process. The FLOPs are counted as torch operations:
the CPU kernels (``cgat_dgl.model.fast.cpu_kernels``) do the same arithmetic out of the counter's
sight. The ``kernels`` column says whether they ran; ``CGAT_CPU_KERNELS=0`` turns them off. The PyTorch path never imports DGL, so it
runs on machines (recent CUDA torch) where DGL is not installed.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import random
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.perf.device import synchronize
from cgat_dgl.graphs.batch import Batch
from cgat_dgl.graphs.build import GraphParams, build_crystal_graph
from cgat_dgl.graphs.collate import collate
from cgat_dgl.graphs.crystal_graph import CrystalGraph
from cgat_dgl.model import CGAT, ModelConfig
from cgat_dgl import kernels
from cgat_dgl.training.allocator import keep_freed_memory
from cgat_dgl.training.config import TrainConfig

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "mp_multifidelity.jsonl.gz"
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "train.json"
PAPER_EPOCH_STRUCTURES = 1_800_000


def load_graphs(
    path: Path, count: int, max_nbr: int, target: str, seed: int = 0
) -> list[tuple[CrystalGraph, float]]:
    """Graphs of ``count`` structures drawn at random (seeded) from the whole file, so that their
    sizes follow the data set's (the first lines hold unusually small cells)."""
    from pymatgen.core import Structure

    with gzip.open(path, "rt") as handle:
        lines = handle.readlines()
    chosen = sorted(random.Random(seed).sample(range(len(lines)), min(count, len(lines))))
    params = GraphParams(max_nbr=max_nbr)
    items = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pymatgen notes rounded fractional coordinates
        for index in chosen:
            row = json.loads(lines[index])
            structure = Structure.from_str(row["cif"], fmt="cif")
            items.append((build_crystal_graph(row["id"], structure, params), float(row[target])))
    return items


def matmul_gflops(
    device: torch.device, dtype: torch.dtype = torch.float32, size: int = 2048, repeats: int = 10
) -> float:
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def _train_step(
    model: CGAT, optimizer: torch.optim.Optimizer, batch: Batch, mean: float, std: float, amp: bool
) -> None:
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(batch.targets.device.type, dtype=torch.bfloat16, enabled=amp):  # type: ignore[union-attr]
        prediction = model(batch)[:, 0].float()
    loss = torch.nn.functional.l1_loss(prediction, (batch.targets - mean) / std)
    loss.backward()
    optimizer.step()


def bench_backend(
    backend: str,
    items: list[tuple[CrystalGraph, float]],
    args: argparse.Namespace,
    device: torch.device,
) -> dict[str, Any]:
    overrides = {"edge_update": args.edge_update} if args.edge_update else {}
    if args.implementation:
        overrides["implementation"] = args.implementation
    config = ModelConfig.preset(args.preset, backend=backend, **overrides)
    torch.manual_seed(0)
    model = CGAT(config).to(device)
    defaults = TrainConfig()  # the training defaults: the step timed is the one that trains
    optimizer = torch.optim.AdamW(model.parameters(), lr=defaults.lr, weight_decay=defaults.weight_decay)

    chunks = [items[i : i + args.batch_size] for i in range(0, len(items), args.batch_size)]
    chunks = [c for c in chunks if len(c) == args.batch_size] or chunks[:1]
    collate(chunks[0], backend=backend)  # type: ignore[arg-type]  # first call loads DGL's kernels
    start = time.perf_counter()
    batches = [collate(chunk, backend=backend) for chunk in chunks]  # type: ignore[arg-type]
    collate_s = time.perf_counter() - start
    batches = [b.to(device) for b in batches]
    targets = torch.cat([b.targets for b in batches])  # type: ignore[misc]
    mean, std = float(targets.mean()), float(targets.std().clamp_min(1e-6))

    for batch in batches[: args.warmup]:
        _train_step(model, optimizer, batch, mean, std, args.amp)
    # The model's operations as torch counts them: the CPU kernels run the same ones out of its sight.
    with FlopCounterMode(display=False) as counter, kernels.turned_off():
        _train_step(model, optimizer, batches[0], mean, std, args.amp)
    flop_per_step = counter.get_total_flops()
    flop_per_structure = flop_per_step / batches[0].num_crystals

    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    structures = atoms = steps = 0
    start, cpu_start = time.perf_counter(), time.process_time()
    while steps < args.steps:
        batch = batches[steps % len(batches)]
        _train_step(model, optimizer, batch, mean, std, args.amp)
        structures += batch.num_crystals
        atoms += batch.num_atoms
        steps += 1
    synchronize(device)
    elapsed = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu_start
    structs_per_s = structures / elapsed
    return {
        "backend": backend,
        "cpu_kernels": device.type == "cpu" and kernels.applies(torch.zeros(1)),
        "parameters": model.count_parameters()["total"],
        "steps": steps,
        "batch_size": args.batch_size,
        "seconds_per_step": elapsed / steps,
        # CPU time of this process over wall time: below the thread count when the cores are shared.
        "cpu_busy_per_wall_s": cpu_seconds / elapsed,
        "structs_per_s": structs_per_s,
        # Per second of CPU time used by this process: what the cores would give if not shared.
        "structs_per_cpu_s": structures / cpu_seconds,
        "atoms_per_s": atoms / elapsed,
        "model_gflop_per_step": flop_per_step / 1e9,
        "model_gflop_per_structure": flop_per_structure / 1e9,
        "model_gflops": flop_per_structure * structs_per_s / 1e9,
        "collate_structs_per_s": sum(b.num_crystals for b in batches) / collate_s,
        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu", choices=["cpu", "paper", "smoke"])
    parser.add_argument("--backend", default="both", choices=["both", "dgl", "torch"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--edge-update", default=None, choices=["paper", "reference", "none"])
    parser.add_argument("--implementation", default=None, choices=["plain", "fast"], help="default: the preset's")
    parser.add_argument("--structures", type=int, default=512, help="structures drawn at random from the data")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast (GPU)")
    parser.add_argument("--target", default="e_form_pbe")
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("CGAT_SHARED_DATA", DEFAULT_DATA)))
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    keep_freed_memory()  # as training does
    device = torch.device(args.device)
    backends = ["dgl", "torch"] if args.backend == "both" else [args.backend]
    if device.type != "cpu" and "dgl" in backends:
        parser.error("the DGL backend is benchmarked on CPU only; use --backend torch")

    items = load_graphs(args.data, args.structures, ModelConfig.preset(args.preset).max_nbr, args.target)
    reference = matmul_gflops(device, torch.bfloat16 if args.amp else torch.float32)
    runs = {backend: bench_backend(backend, items, args, device) for backend in backends}

    result: dict[str, Any] = {
        "preset": args.preset,
        "device": str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "structures": len(items),
        "mean_atoms": sum(g.num_atoms for g, _ in items) / len(items),
        "amp": args.amp,
        "edge_update": args.edge_update or ModelConfig.preset(args.preset).edge_update,
        "matmul_gflops": reference,
        "matmul_dtype": "bfloat16" if args.amp else "float32",
    }
    for backend, run in runs.items():
        run["flop_utilization"] = run["model_gflops"] / reference
        for key, value in run.items():
            if key != "backend":
                result[f"{backend}_{key}"] = value
    best = max(runs.values(), key=lambda r: r["structs_per_s"])
    result["flop_utilization"] = best["flop_utilization"]
    result["model_gflops"] = best["model_gflops"]
    result["model_gflop_per_structure"] = best["model_gflop_per_structure"]
    result["epoch_hours_1p8m"] = PAPER_EPOCH_STRUCTURES / best["structs_per_s"] / 3600

    print(f"preset {args.preset} ({result['edge_update']} edge update) on {device} "
          f"({torch.get_num_threads()} threads{', bf16 autocast' if args.amp else ''}), "
          f"{len(items)} structures, {result['mean_atoms']:.1f} atoms on average, batch {args.batch_size}; "
          f"2048^2 {result['matmul_dtype']} matmul {reference:.1f} GFLOP/s")
    header = (f"{'backend':<8}{'kernels':>8}{'struct/s':>10}{'struct/cpu-s':>13}{'atoms/s':>10}{'ms/step':>9}{'cpu/wall':>9}"
              f"{'GFLOP/step':>12}{'GFLOP/s':>9}{'util':>7}")
    print(header)
    for backend, run in runs.items():
        print(f"{backend:<8}{'cpu' if run['cpu_kernels'] else 'torch':>8}{run['structs_per_s']:>10.1f}{run['structs_per_cpu_s']:>13.1f}"
              f"{run['atoms_per_s']:>10.0f}"
              f"{1000 * run['seconds_per_step']:>9.1f}{run['cpu_busy_per_wall_s']:>9.2f}"
              f"{run['model_gflop_per_step']:>12.2f}"
              f"{run['model_gflops']:>9.1f}{run['flop_utilization']:>7.1%}")
    print(f"projected epoch over {PAPER_EPOCH_STRUCTURES:,} structures: "
          f"{result['epoch_hours_1p8m']:.2f} h at {best['structs_per_s']:.1f} structures/s")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
