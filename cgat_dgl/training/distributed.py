"""Data-parallel training plumbing (torch.distributed): the process group, rank queries, the
training sampler, sharded evaluation and the few reductions the trainer needs.

``train()`` runs data-parallel whenever torch's default process group is initialised (``init``
or ``process_group``; ``cgat train --ddp`` does it under torchrun); every function here is the
identity, or the single-process answer, when it is not, so the single-process loop is unchanged.

How a data-parallel run stays the same run as one process with the same global batch:

* ``train_sampler`` is a ``DistributedSampler`` seeded with the run's seed; after
  ``set_epoch(epoch)`` it shuffles as the single-process loader does, a DataLoader whose generator
  is seeded ``seed + epoch``, and rank r takes positions r, r + W, r + 2W, ... Per-rank batches
  of ``batch_size / W`` then make the ranks' k-th batches together exactly the single-process k-th
  batch (when W divides the training set; otherwise torch pads it with up to W - 1 repeated
  items per epoch). Every rank has as many batches of the same size, so averaging the per-rank
  mean losses (what DDP's gradient all-reduce does) is the mean over the global batch.
* Evaluation is sharded with ``shard`` (rank r takes items r, r + W, ..., no padding) and
  ``gather_shards`` puts the predictions back in dataset order on every rank, so every rank
  computes the same metrics from the same numbers and agrees on the best epoch.
* Results differ from one process only in float rounding: the gradient is summed per rank and
  then across ranks (another order), and the model sees smaller batches (other kernel blockings).
  The model has no batch norm (only LayerNorm, per item) and no dropout, so nothing else differs.
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import logging
import math
import os
import pickle
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

log = logging.getLogger(__name__)

T = TypeVar("T")


# --- the process group -------------------------------------------------------------------------
def is_active() -> bool:
    """Whether this process is one rank of a data-parallel run (the default process group is up)."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_active() else 0


_rank = rank  # for functions whose ``rank`` argument hides it


def world_size() -> int:
    return dist.get_world_size() if is_active() else 1


def is_main() -> bool:
    """Rank 0, the only rank that writes checkpoints, prediction files and MLflow runs (True without DDP)."""
    return rank() == 0


def local_rank() -> int:
    """This rank's index on its machine (torchrun's LOCAL_RANK), which picks its GPU."""
    return int(os.environ.get("LOCAL_RANK", rank()))


def launched_by_torchrun() -> bool:
    """Whether this process was started by torchrun (or another launcher that sets env:// variables)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def backend_for(device: str | torch.device) -> str:
    """NCCL for GPUs, gloo for CPUs; ``"auto"`` means the GPU when there is one (as ``--device auto``)."""
    if str(device) == "auto":
        return "nccl" if torch.cuda.is_available() else "gloo"
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def init(
    device: str | torch.device = "auto",
    *,
    init_method: str = "env://",
    rank: int | None = None,
    world_size: int | None = None,
    timeout: datetime.timedelta | None = None,
) -> str:
    """Join the default process group (gloo on CPU, NCCL on GPU) and return the backend.

    With the default ``env://`` the rank and world size come from torchrun's environment; a test
    may pass them with a ``file://`` or ``tcp://`` ``init_method``. On a GPU each rank is pinned to
    the GPU of its local rank first, which NCCL's object collectives need.
    """
    if is_active():
        raise RuntimeError("the torch.distributed process group is already initialised")
    backend = backend_for(device)
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank or 0)))
    options: dict[str, Any] = {"backend": backend, "init_method": init_method}
    if rank is not None:
        options["rank"] = rank
    if world_size is not None:
        options["world_size"] = world_size
    if timeout is not None:
        options["timeout"] = timeout
    dist.init_process_group(**options)
    log.info("rank %d of %d joined the %s process group", dist.get_rank(), dist.get_world_size(), backend)
    return backend


# Tensors of the latest collectives, held until the group is destroyed. With torch 2.2's gloo,
# destroying the group joins its worker threads while holding the GIL, and a worker that still
# releases a finished collective's tensors needs the GIL where it holds their last reference (a
# barrier's work keeps the works before it, and their tensors, alive until it ends): a deadlock,
# seen in the tests. While these references exist the workers never release the last one. Every
# collective here goes through ``_held``; torch's object collectives, whose tensors are dropped
# inside torch, are not used.
_recent: collections.deque[torch.Tensor] = collections.deque(maxlen=256)


def _held(tensor: torch.Tensor) -> torch.Tensor:
    _recent.append(tensor)
    return tensor


def destroy(wait: bool = True) -> None:
    """Leave the process group (a no-op without one), so the process can exit or join another.

    ``wait``: meet the other ranks in a barrier first, so that no rank leaves while another still
    waits in a collective. A rank that fails leaves without waiting (the others may never reach
    the barrier); its exit makes their collectives fail.
    """
    if is_active():
        if wait:
            dist.barrier()
        dist.destroy_process_group()
    _recent.clear()


@contextlib.contextmanager
def process_group(device: str | torch.device = "auto", **options: Any) -> Iterator[str]:
    """``init`` for the duration of a ``with`` block, destroyed however the block ends."""
    backend = init(device, **options)
    try:
        yield backend
    except BaseException:
        destroy(wait=False)
        raise
    destroy()


def barrier() -> None:
    """Wait for every rank (a no-op without DDP), e.g. until rank 0 has written a checkpoint."""
    if is_active():
        dist.barrier()


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Run the block on rank 0 first, then on the other ranks: rank 0 builds the graph cache and the
    split file once, and the others read them instead of racing to write the same files."""
    if not is_main():
        barrier()
    try:
        yield
    finally:
        if is_main():
            barrier()


# --- the model and the data --------------------------------------------------------------------
def rank_device(device: torch.device) -> torch.device:
    """This rank's device: its own GPU (by local rank) when training on CUDA with DDP."""
    if is_active() and device.type == "cuda":
        return torch.device("cuda", local_rank())
    return device


def wrap_model(model: nn.Module) -> nn.Module:
    """The module the training step calls: DistributedDataParallel around ``model`` with DDP,
    ``model`` itself without. The caller keeps ``model`` for state dicts, evaluation and freezing.

    DDP syncs only parameters with ``requires_grad``, so frozen groups (the head strategy) are
    left out of the gradient all-reduce; every trainable parameter of CGAT gets a gradient in
    each step, so ``find_unused_parameters`` (a graph walk per step) is not needed.
    ``device_ids`` stays None: the trainer moves each batch itself, and DDP would otherwise try
    to copy the ``Batch`` (with its DGL graphs) to the device again.
    """
    if not is_active():
        return model
    return nn.parallel.DistributedDataParallel(model, device_ids=None, find_unused_parameters=False)


def per_rank_batch(global_batch: int) -> int:
    """Each rank's share of a global batch; the global batch must divide evenly."""
    world = world_size()
    if global_batch % world:
        raise ValueError(
            f"the batch size {global_batch} is the global batch and must be divisible by the {world} processes"
        )
    return global_batch // world


def loader_order(size: int, seed: int) -> list[int]:
    """The order in which a shuffled DataLoader whose generator is seeded ``seed`` visits ``size``
    items: the single-process training order. Not simply ``randperm`` seeded ``seed``: the loader's
    iterator first draws its workers' base seed from the same generator. Asking a DataLoader
    itself keeps this exact whatever such details of torch's loader are."""
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(range(size), batch_size=max(size, 1), shuffle=True, generator=generator)  # type: ignore[arg-type]
    return [int(index) for batch in loader for index in batch]


class LoaderOrderSampler(DistributedSampler):
    """A ``DistributedSampler`` whose epoch permutation is the single-process loader's
    (``loader_order(n, seed + epoch)``) instead of ``randperm`` seeded ``seed + epoch``; padding (up
    to W - 1 repeated items when W does not divide the set) and the split over ranks are torch's."""

    def __iter__(self) -> Iterator[int]:
        indices = loader_order(len(self.dataset), self.seed + self.epoch)  # type: ignore[arg-type]
        padding = self.total_size - len(indices)
        if padding > 0:
            indices += (indices * math.ceil(padding / len(indices)))[:padding]
        return iter(indices[self.rank : self.total_size : self.num_replicas])


def train_sampler(
    dataset: Dataset, seed: int, num_replicas: int | None = None, rank: int | None = None
) -> DistributedSampler:
    """This rank's shuffled share of the training set; call ``set_epoch(epoch)`` before each epoch.
    ``num_replicas`` and ``rank`` default to the process group's (a test may give them)."""
    return LoaderOrderSampler(
        dataset,
        num_replicas=world_size() if num_replicas is None else num_replicas,
        rank=_rank() if rank is None else rank,
        shuffle=True,
        seed=seed,
        drop_last=False,
    )


def shard(dataset: Sequence[Any]) -> Any:
    """This rank's evaluation share: items rank, rank + W, ... (the dataset itself without DDP)."""
    if not is_active():
        return dataset
    return Subset(dataset, range(rank(), len(dataset), world_size()))  # type: ignore[arg-type]


def _interleave(parts: Sequence[np.ndarray]) -> np.ndarray:
    """The inverse of ``shard``: part r holds items r, r + W, r + 2W, ... of the whole."""
    merged = np.empty(sum(len(part) for part in parts), dtype=np.result_type(*parts))
    for index, part in enumerate(parts):
        merged[index :: len(parts)] = part
    return merged


def gather_shards(
    predicted: np.ndarray, actual: np.ndarray, ids: list[str]
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Every rank's ``shard`` predictions, targets and ids, back in dataset order, on every rank."""
    if not is_active():
        return predicted, actual, ids
    parts = all_gather_object((np.asarray(predicted), np.asarray(actual), np.asarray(ids, dtype=object)))
    merged_ids = _interleave([part[2] for part in parts]).tolist()
    targets = [part[1] for part in parts]
    # predict_loader gives no targets for unlabelled items: then there are none to put in order
    labelled = all(len(t) == len(part[2]) for t, part in zip(targets, parts))
    merged_actual = _interleave(targets) if labelled else np.zeros(0, np.float32)
    return _interleave([part[0] for part in parts]), merged_actual, merged_ids


# --- reductions --------------------------------------------------------------------------------
def _collective_device() -> torch.device:
    """NCCL reduces GPU tensors only; gloo CPU tensors."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(values: Sequence[float]) -> list[float]:
    """The sums over the ranks (in float64), e.g. of the training error sum and count; the values
    themselves without DDP."""
    if not is_active():
        return list(values)
    tensor = _held(torch.tensor(list(values), dtype=torch.float64, device=_collective_device()))
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.cpu().tolist()


def all_finite(loss: torch.Tensor) -> bool:
    """Whether the loss is finite on every rank: all ranks must stop at the same step, or the
    ones that go on wait in the gradient all-reduce for the one that stopped."""
    finite = torch.isfinite(loss.detach())
    if not is_active():
        return bool(finite)
    flag = _held(finite.to(device=_collective_device(), dtype=torch.int32).reshape(1))
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def broadcast_object(value: T) -> T:
    """Rank 0's ``value`` on every rank (e.g. whether to resume, the MLflow run id)."""
    if not is_active():
        return value
    payload = pickle.dumps(value) if rank() == 0 else b""
    device = _collective_device()
    size = _held(torch.tensor([len(payload)], dtype=torch.int64, device=device))
    dist.broadcast(size, src=0)
    if rank() == 0:
        data = _held(torch.frombuffer(bytearray(payload), dtype=torch.uint8).to(device))
    else:
        data = _held(torch.empty(int(size.item()), dtype=torch.uint8, device=device))
    dist.broadcast(data, src=0)
    return pickle.loads(data.cpu().numpy().tobytes())  # type: ignore[no-any-return]


def all_gather_object(value: Any) -> list[Any]:
    """Every rank's ``value``, in rank order, on every rank."""
    if not is_active():
        return [value]
    payload = pickle.dumps(value)
    device = _collective_device()
    size = _held(torch.tensor([len(payload)], dtype=torch.int64, device=device))
    sizes = [_held(torch.empty_like(size)) for _ in range(world_size())]
    dist.all_gather(sizes, size)
    longest = max(int(s.item()) for s in sizes)
    data = _held(torch.zeros(longest, dtype=torch.uint8, device=device))
    data[: len(payload)] = torch.frombuffer(bytearray(payload), dtype=torch.uint8).to(device)
    gathered = [_held(torch.empty_like(data)) for _ in range(world_size())]
    dist.all_gather(gathered, data)
    return [pickle.loads(g[: int(n.item())].cpu().numpy().tobytes()) for g, n in zip(gathered, sizes)]
