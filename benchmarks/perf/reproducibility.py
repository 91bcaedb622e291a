"""Where training's numbers depend on the machine, and what fixing them costs.

    python -m benchmarks.perf.reproducibility hunt    # which code path changes which bits
    python -m benchmarks.perf.reproducibility cost    # training steps per second, portable vs native
    python -m benchmarks.perf.reproducibility golden  # the golden run's values, for tests/golden_training.json

``hunt`` runs, in one child process per variant, the golden training (``golden_training``: the cpu
preset, two epochs on 256 real crystals, one thread) and a first-step probe (the crystal graphs'
arrays, the forward's predictions, the gradients, the weights after one AdamW step), each as a
SHA-256, under the portable settings of ``cgat_dgl.numerics`` and with one code path switched to
another: the host's MKL branch, ATen's scalar or AVX-512 code, numpy's AVX-512 loops, OpenBLAS's
host kernels, the CPU kernels with AVX-512's 16 lanes or tuned for the host, torch operations
instead of the kernels, everything native. A variant whose hashes differ from the portable run's
shows a source of divergence across machines, and the first quantity that differs says where.
``cost`` times training steps (``benchmarks.perf.train``) under the portable settings, with each
library in turn on the host's code, and native, by turns, and reports the ratios to native. Both print a table and write JSON under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "mp_multifidelity.jsonl.gz"
RESULTS = REPO_ROOT / "benchmarks" / "results"
GOLDEN_VALUES = REPO_ROOT / "tests" / "golden_training.json"

# The golden run: the first crystals of the shared file with a PBE formation energy and at most
# GOLDEN_MAX_ATOMS sites, split in file order.
GOLDEN_SIZES = (256, 32, 32)
GOLDEN_MAX_ATOMS = 16
GOLDEN_PROPERTY = "e_form_pbe"

# Each variant: the environment that switches one code path (on top of the portable settings).
VARIANTS: dict[str, dict[str, str]] = {
    "portable": {},
    "mkl host branch (MKL_CBWR=AUTO)": {"MKL_CBWR": "AUTO"},
    "aten scalar code (ATEN_CPU_CAPABILITY=default)": {"ATEN_CPU_CAPABILITY": "default"},
    "aten AVX-512 code (ATEN_CPU_CAPABILITY=avx512)": {"ATEN_CPU_CAPABILITY": "avx512"},
    "numpy's AVX-512 loops (NPY_DISABLE_CPU_FEATURES unset)": {"NPY_DISABLE_CPU_FEATURES": ""},
    "OpenBLAS for the host (OPENBLAS_CORETYPE unset)": {"OPENBLAS_CORETYPE": ""},
    "kernels with 16 lanes (AVX-512 build)": {"CGAT_KERNEL_CFLAGS": "-DCGAT_VECTOR_LANES=16"},
    "kernels tuned for the host (-mtune=native)": {"CGAT_KERNEL_CFLAGS": "-mtune=native"},
    "torch operations (no kernels)": {"CGAT_CPU_KERNELS": "0"},
    "native (CGAT_NUMERICS=native)": {"CGAT_NUMERICS": "native"},
}

# What each portable setting costs: the portable run with one library on the host's own code, and the
# native run (every library on it).
COST_VARIANTS: dict[str, dict[str, str]] = {
    "portable": {},
    "mkl host branch": {"MKL_CBWR": "AUTO"},
    "aten host code": {"ATEN_CPU_CAPABILITY": "avx512"},
    "kernels for the host": {"CGAT_KERNEL_CFLAGS": "-march=native"},
    "numpy, OpenBLAS for the host": {"NPY_DISABLE_CPU_FEATURES": "", "OPENBLAS_CORETYPE": ""},
    "native": {"CGAT_NUMERICS": "native"},
}


def weights_sha256(state: dict[str, Any]) -> str:
    """SHA-256 of a state dict's tensors, by name, in name order."""
    digest = hashlib.sha256()
    for name in sorted(state):
        value = state[name]
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def golden_sets(data: Path) -> tuple[Any, Any, Any]:
    from pymatgen.core import Structure

    from cgat_dgl.data.dataset import GraphDataset
    from cgat_dgl.graphs.build import build_crystal_graph
    from cgat_dgl.graphs.neighbors import GraphParams

    needed = sum(GOLDEN_SIZES)
    rows: list[dict[str, Any]] = []
    with gzip.open(data, "rt", encoding="utf-8") as stream:
        for line in stream:
            row = json.loads(line)
            if row.get(GOLDEN_PROPERTY) is not None and row["natoms"] <= GOLDEN_MAX_ATOMS:
                rows.append(row)
                if len(rows) == needed:
                    break
    if len(rows) < needed:
        raise ValueError(f"{data}: only {len(rows)} crystals with {GOLDEN_PROPERTY} and <= {GOLDEN_MAX_ATOMS} sites")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the CIF parser's notes on rounded coordinates
        graphs = [build_crystal_graph(r["id"], Structure.from_str(r["cif"], fmt="cif"), GraphParams()) for r in rows]
    data_set = GraphDataset([r["id"] for r in rows], graphs, [r[GOLDEN_PROPERTY] for r in rows])
    first, second = GOLDEN_SIZES[0], GOLDEN_SIZES[0] + GOLDEN_SIZES[1]
    ids = data_set.ids
    return data_set.subset(ids[:first]), data_set.subset(ids[first:second]), data_set.subset(ids[second:])


def golden_training(data: Path, out_dir: Path) -> dict[str, Any]:
    """The golden run: the SHA-256 of its final weights and its test MAE (and its epochs' losses)."""
    import torch

    from cgat_dgl.model import ModelConfig
    from cgat_dgl.training.checkpoint import read_checkpoint
    from cgat_dgl.training.config import TrainConfig
    from cgat_dgl.training.trainer import train

    config = TrainConfig(epochs=2, batch_size=32, lr=1e-3, weight_decay=1e-6, schedule="cosine", seed=0,
                         device="cpu", threads=1)
    result = train(ModelConfig.preset("cpu"), config, *golden_sets(data), out_dir=out_dir, resume=False)
    final = read_checkpoint(result.last_checkpoint or result.checkpoint)["model_state"]
    return {
        "weights_sha256": weights_sha256(final),
        "test_mae": result.test["mae"],
        "train_mae": [row["train_mae"] for row in result.history],
        "threads": torch.get_num_threads(),
    }


def first_step(data: Path) -> dict[str, str]:
    """SHA-256 of the first training step's quantities, in the order they are computed."""
    import numpy as np
    import torch

    from cgat_dgl.graphs.collate import collate
    from cgat_dgl.model import CGAT, ModelConfig

    train_set, _, _ = golden_sets(data)
    graphs = hashlib.sha256()  # the crystal graphs' arrays (distances, neighbour order, ...)
    for graph in train_set.graphs:
        for name, value in sorted(vars(graph).items()):
            if hasattr(value, "shape"):
                graphs.update(name.encode())
                graphs.update(np.ascontiguousarray(np.asarray(value)).tobytes())
    torch.manual_seed(0)
    model = CGAT(ModelConfig.preset("cpu"))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-6)
    batch = collate([train_set[i] for i in range(32)], backend=model.config.backend)
    prediction = model(batch)[:, 0]
    loss = torch.nn.functional.l1_loss(prediction, batch.targets)
    loss.backward()
    grads = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
    optimizer.step()

    def sha(value: Any) -> str:
        return weights_sha256(value if isinstance(value, dict) else {"": value})[:16]

    return {"graphs": graphs.hexdigest()[:16], "forward": sha(prediction), "gradients": sha(grads),
            "optimizer step": sha(model.state_dict())}


def child(data: Path) -> None:
    from cgat_dgl import numerics  # first: it pins the settings before torch computes

    import torch

    from cgat_dgl import kernels

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        golden = golden_training(data, Path(folder))
    record = {**first_step(data), "training": golden["weights_sha256"][:16], "test_mae": golden["test_mae"],
              "numerics": numerics.key("cpu", kernels.enabled_groups()), **numerics.tags()}
    print(json.dumps(record))


def child_environment(changes: dict[str, str]) -> dict[str, str]:
    """This environment without the settings this process pinned (a child pins its own), with ``changes``."""
    from cgat_dgl import numerics

    inherited = {name: value for name, value in os.environ.items() if name not in numerics.PORTABLE_SETTINGS}
    return {**inherited, **changes}


def run_variant(env: dict[str, str], data: Path) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.perf.reproducibility", "child", "--data", str(data)]
    done = subprocess.run(command, env=child_environment(env), cwd=REPO_ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"variant {env}: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


STAGES = ("graphs", "forward", "gradients", "optimizer step", "training")


def hunt(data: Path, out: Path) -> dict[str, Any]:
    results = {name: {"env": env, **run_variant(env, data)} for name, env in VARIANTS.items()}
    reference = results["portable"]
    print(f"{'variant':<56}{'first difference':<18}{'final weights':<18}{'test MAE':>14}")
    for name, record in results.items():
        differs = [stage for stage in STAGES if record[stage] != reference[stage]]
        record["first_difference"] = differs[0] if differs else "none"
        print(f"{name:<56}{record['first_difference']:<18}{record['training']:<18}{record['test_mae']:>14.9f}")
    summary = {"cpu_model": reference["cgat.cpu_model"], "isa_level": reference["cgat.isa_level"], "variants": results}
    print(f"on {summary['cpu_model']} ({summary['isa_level']})")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def cost(data: Path, out: Path, rounds: int, steps: int) -> dict[str, Any]:
    """Training steps per second under each of COST_VARIANTS, all of them in turn for each round (so
    that they share the machine's load), as ratios to the native run."""
    rates: dict[str, list[float]] = {name: [] for name in COST_VARIANTS}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(rounds):
            for name, env in COST_VARIANTS.items():
                json_out = Path(folder) / "train.json"
                command = [sys.executable, "-m", "benchmarks.perf.train", "--backend", "dgl", "--threads", "1",
                           "--steps", str(steps), "--data", str(data), "--out", str(json_out)]
                subprocess.run(command, env=child_environment(env), cwd=REPO_ROOT, check=True, capture_output=True)
                rates[name].append(json.loads(json_out.read_text())["dgl_structs_per_cpu_s"])
    ratios = {name: [value / native for value, native in zip(values, rates["native"])] for name, values in rates.items()}
    medians = {name: statistics.median(values) for name, values in ratios.items()}
    summary = {"rounds": rounds, "steps": steps, "structs_per_cpu_s": rates, "ratio_to_native": ratios,
               "median_ratio_to_native": medians, "portable_over_native": medians["portable"]}
    print(f"{'settings':<24}{'struct/cpu-s':>14}{'vs native':>11}  (cpu preset, 1 thread, medians of {rounds} rounds)")
    for name, values in rates.items():
        print(f"{name:<24}{statistics.median(values):>14.1f}{medians[name]:>11.3f}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def golden(data: Path, out: Path) -> dict[str, Any]:
    """Write the golden values of this machine (to be committed only from a portable run)."""
    import torch

    from cgat_dgl import numerics
    from cgat_dgl import kernels

    if not numerics.portable():
        raise SystemExit(f"the numerics here are not the portable ones: {numerics.tags()}")
    torch.set_num_threads(1)
    values: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as folder:
        values["kernels"] = golden_training(data, Path(folder) / "kernels")
        with kernels.turned_off():
            values["torch_ops"] = golden_training(data, Path(folder) / "torch_ops")
    record = {"made_on": f"{numerics.cpu_model()} ({numerics.isa_level()})", "numerics": numerics.tags(), **values}
    print(json.dumps(record, indent=2))
    out.write_text(json.dumps(record, indent=2) + "\n")
    return record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("hunt", "cost", "golden", "child"))
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("CGAT_SHARED_DATA", DEFAULT_DATA)))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=15)
    args = parser.parse_args(argv)
    if args.command == "child":
        child(args.data)
    elif args.command == "golden":
        golden(args.data, args.out or GOLDEN_VALUES)
    elif args.command == "hunt":
        from cgat_dgl import numerics

        hunt(args.data, args.out or RESULTS / f"reproducibility_{numerics.isa_level()}.json")  # one file per machine kind
    else:
        from cgat_dgl import numerics

        cost(args.data, args.out or RESULTS / f"reproducibility_cost_{numerics.isa_level()}.json", args.rounds, args.steps)


if __name__ == "__main__":
    main()
