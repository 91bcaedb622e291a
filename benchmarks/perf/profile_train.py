"""Where a training step's time goes: ``torch.profiler`` by operator and by model part.

    python -m benchmarks.perf.profile_train                   # cpu preset, DGL backend, 2 threads
    python -m benchmarks.perf.profile_train --backend torch --preset paper --device cuda

Profiles forward + backward + AdamW steps on pre-collated batches of real structures (the same
sample as ``benchmarks.perf.train``) and prints two tables: self time per operator, and time per
model part (each top-level module's forward, and the backward and optimiser as a whole). Model parts
are marked with ``record_function`` from forward hooks, so the model code carries no profiling; with
the fast implementation its functions are marked instead (``fast.node_update`` includes
``fast.apply_hyper_mlp``).
Writes ``benchmarks/results/profile_<backend>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile, record_function

from benchmarks.perf.train import DEFAULT_DATA, REPO_ROOT, load_graphs
from cgat_dgl.graphs.collate import collate
from cgat_dgl.model import CGAT, ModelConfig
from cgat_dgl.training.allocator import keep_freed_memory

PART_PREFIX = "part::"


def model_parts(model: CGAT) -> dict[str, nn.Module]:
    """The modules whose forward time is reported: each step's node and edge update, and the rest."""
    parts: dict[str, nn.Module] = {"embedding": model.embedding}
    for t, step in enumerate(model.message_passing):
        for name, child in step.named_children():
            parts[f"step{t}.{name}"] = child
    parts.update(roost=model.roost, pooling=model.pooling, head=model.head)
    return parts


def mark_parts(parts: dict[str, nn.Module]) -> None:
    """Wrap each part's forward in a ``record_function`` range named after it."""
    for name, module in parts.items():
        contexts: list[Any] = []

        def enter(
            _module: nn.Module, _inputs: Any, label: str = PART_PREFIX + name, store: list[Any] = contexts
        ) -> None:
            store.append(record_function(label).__enter__())

        def leave(_module: nn.Module, _inputs: Any, _output: Any, store: list[Any] = contexts) -> None:
            store.pop().__exit__(None, None, None)

        module.register_forward_pre_hook(enter)
        module.register_forward_hook(leave)


def mark_fast_functions() -> None:
    """Wrap the functions of the fast implementation in ``record_function`` ranges: it calls the
    step modules' parameters directly, so their forward hooks do not fire."""
    import functools

    from cgat_dgl.model.fast import message_passing

    for name in ("evaluate_networks", "node_update", "paper_edge_update", "apply_hyper_mlp"):
        function = getattr(message_passing, name)

        @functools.wraps(function)
        def wrapped(*args: Any, _function: Any = function, _label: str = PART_PREFIX + "fast." + name, **kwargs: Any) -> Any:
            with record_function(_label):
                return _function(*args, **kwargs)

        setattr(message_passing, name, wrapped)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu", choices=["cpu", "paper", "smoke"])
    parser.add_argument("--backend", default="dgl", choices=["dgl", "torch"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--structures", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4, help="profiled training steps")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rows", type=int, default=25, help="operators shown")
    parser.add_argument("--model", action="append", default=[], metavar="FIELD=VALUE",
                        help="model config override, e.g. --model fast=false")
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("CGAT_SHARED_DATA", DEFAULT_DATA)))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as training does
    device = torch.device(args.device)
    overrides = dict(item.split("=", 1) for item in args.model)
    config = ModelConfig.preset(args.preset, backend=args.backend, **overrides)
    items = load_graphs(args.data, args.structures, config.max_nbr, "e_form_pbe")
    chunks = [items[i : i + args.batch_size] for i in range(0, len(items), args.batch_size)]
    batches = [collate(chunk, backend=args.backend).to(device) for chunk in chunks]

    torch.manual_seed(0)
    model = CGAT(config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step(batch: Any) -> None:
        optimizer.zero_grad(set_to_none=True)
        with record_function(PART_PREFIX + "forward"):
            prediction = model(batch)[:, 0]
            loss = torch.nn.functional.l1_loss(prediction, batch.targets)
        with record_function(PART_PREFIX + "backward"):
            loss.backward()
        with record_function(PART_PREFIX + "optimizer"):
            optimizer.step()

    for batch in batches[:2]:
        step(batch)  # warm-up
    mark_parts(model_parts(model))
    if getattr(config, "implementation", "plain") == "fast":
        mark_fast_functions()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for index in range(args.steps):
            step(batches[index % len(batches)])

    events = prof.key_averages()
    total_us = sum(e.self_cpu_time_total for e in events)
    operators = sorted(
        (e for e in events if not e.key.startswith(PART_PREFIX)), key=lambda e: -e.self_cpu_time_total
    )
    parts: dict[str, float] = defaultdict(float)
    for e in events:
        if e.key.startswith(PART_PREFIX):
            parts[e.key[len(PART_PREFIX):]] += e.cpu_time_total
    per_step = 1e3 / args.steps
    print(f"preset {args.preset}, backend {args.backend}, {device}, {torch.get_num_threads()} threads, "
          f"batch {args.batch_size}: {total_us / 1e3 * per_step / 1e3:.1f} ms of operator self time per step")
    print(f"{'operator':<44}{'ms/step':>9}{'share':>8}{'calls/step':>12}")
    rows = []
    for e in operators[: args.rows]:
        share = e.self_cpu_time_total / total_us
        rows.append({"operator": e.key, "ms_per_step": e.self_cpu_time_total * per_step / 1e6,
                     "share": share, "calls_per_step": e.count / args.steps})
        print(f"{e.key[:43]:<44}{rows[-1]['ms_per_step']:>9.2f}{share:>8.1%}{e.count / args.steps:>12.0f}")
    print(f"\n{'model part (forward unless named)':<44}{'ms/step':>9}")
    for name, us in sorted(parts.items(), key=lambda kv: -kv[1]):
        print(f"{name:<44}{us * per_step / 1e6:>9.2f}")

    result = {
        "preset": args.preset, "backend": args.backend, "device": str(device),
        "threads": torch.get_num_threads(), "batch_size": args.batch_size, "torch": torch.__version__,
        "model": config.model_dump(mode="json"),
        "operators": rows, "parts_ms_per_step": {k: v * per_step / 1e6 for k, v in parts.items()},
    }
    out = args.out or REPO_ROOT / "benchmarks" / "results" / f"profile_{args.backend}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
