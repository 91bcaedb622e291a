"""The C++ kernels (``src/``) of the model's message passing (``cgat_dgl.model.fast.cpu_kernels``) and
of the optimiser's step (``cgat_dgl.training.optimizer``), compiled on first use: here so that both
reach them without the optimiser importing the model.

The extension is built with torch's C++ extension loader (a C++ compiler and ninja) into
``torch_extensions`` under the user's cache (``TORCH_EXTENSIONS_DIR`` moves it) the first time it is
needed, about 40 s on two cores, and reused by later processes; ``make install`` builds it. Where it cannot
be built the model runs as torch operations, with a warning. ``CGAT_CPU_KERNELS=0`` turns the
kernels off.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import logging
import os
import platform
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from cgat_dgl import numerics

log = logging.getLogger(__name__)

SOURCES = [
    Path(__file__).with_name("src") / name
    for name in (
        "bindings.cpp", "blas.cpp", "tile_gemm.cpp", "edge_networks.cpp", "attention.cpp", "hypernetwork.cpp",
        "edge_update.cpp", "indexed_product.cpp",
    )
]
ENABLE_ENV = "CGAT_CPU_KERNELS"


class KernelUnavailable(RuntimeError):
    """The CPU kernels could not be compiled or loaded here."""


_turned_off = 0


def build_name() -> str:
    """The extension's name, one per build: the instruction-set flags (``numerics.kernel_cflags``), and
    with -march=native the host's CPU flags, since a build folder may be shared by several machines."""
    flags = " ".join(numerics.kernel_cflags())
    if "-march=native" in flags:
        flags += " " + " ".join(sorted(numerics._cpuinfo().get("flags", "").split()))
    digest = hashlib.sha1(f"{platform.machine()} {flags}".encode()).hexdigest()[:10]
    return f"cgat_cpu_kernels_{digest}"


@functools.lru_cache(maxsize=None)
def _built() -> bool:
    """Whether this machine holds a build of the kernels (a guess: torch decides whether it is current)."""
    from torch.utils import cpp_extension

    try:
        folder = Path(cpp_extension._get_build_directory(build_name(), verbose=False))
    except Exception:  # a private helper of torch: any change in it only costs the notice
        return True
    return any(folder.glob("*.so"))


@functools.lru_cache(maxsize=None)
def load() -> Any:
    """The compiled extension module; raises KernelUnavailable with the compiler's reason. Loaded once
    per process: torch's loader hashes every source file on each call, a millisecond that every kernel
    call would pay."""
    with contextlib.redirect_stderr(io.StringIO()):  # its import notes where it found no CUDA
        from torch.utils import cpp_extension

    if numerics.mode() == numerics.PORTABLE and not numerics.runs_kernel_isa():
        raise KernelUnavailable(f"this CPU ({numerics.isa_level()}) does not run {numerics.KERNEL_ISA} code")
    if not _built():
        print("compiling the CPU kernels (once per machine and version, about a minute)", file=sys.stderr, flush=True)
    try:
        return cpp_extension.load(
            name=build_name(),
            sources=[str(path) for path in SOURCES],
            extra_cflags=["-O3", *numerics.kernel_cflags(), "-fno-trapping-math", "-fopenmp"],
            extra_ldflags=["-fopenmp"],
            verbose=False,
        )
    except Exception as error:  # compiler missing, ninja missing, build failure
        raise KernelUnavailable(f"could not build the CPU kernels in {SOURCES[0].parent}: {error}") from error


@functools.lru_cache(maxsize=None)
def available() -> bool:
    """Whether the kernels build and load on this machine (the reason is logged once if not)."""
    try:
        load()
    except KernelUnavailable as error:
        log.warning("%s; the model runs as torch operations", error)
        return False
    return True


# The kernels by the work they replace: CGAT_CPU_KERNELS=1 (the default) runs them all, 0 none, and a
# comma-separated list of these names only those (for measuring what each buys).
GROUPS = ("edge_networks", "attention", "edge_update", "hypernetwork")


def enabled_groups() -> tuple[str, ...]:
    """The kernel groups CGAT_CPU_KERNELS turns on (an unknown name is an error, not a silent no)."""
    value = os.environ.get(ENABLE_ENV, "1").strip()
    if value in ("", "1"):
        return GROUPS
    if value == "0":
        return ()
    names = tuple(name.strip() for name in value.split(",") if name.strip())
    unknown = sorted(set(names) - set(GROUPS))
    if unknown:
        raise ValueError(f"{ENABLE_ENV}={value!r}: unknown kernel group(s) {unknown}; use 0, 1 or names from {GROUPS}")
    return tuple(name for name in GROUPS if name in names)


def applies(values: torch.Tensor, group: str | None = None) -> bool:
    """Whether the kernels (of ``group``; None: any) run on tensors like ``values``: float32 on CPU,
    not turned off, built."""
    if values.device.type != "cpu" or values.dtype != torch.float32:
        return False
    if group is not None and group not in GROUPS:
        raise ValueError(f"unknown kernel group {group!r}; the groups are {GROUPS}")
    enabled = enabled_groups()
    if _turned_off or not enabled or (group is not None and group not in enabled):
        return False
    return available()


@contextlib.contextmanager
def turned_off() -> Iterator[None]:
    """Run the torch operations instead of the kernels inside the block (for comparisons, and for
    counting the model's operations, which the kernels hide from torch's counters)."""
    global _turned_off
    _turned_off += 1
    try:
        yield
    finally:
        _turned_off -= 1
