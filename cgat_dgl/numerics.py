"""How a CPU computes the numbers: the settings under which training gives bitwise the same weights on
every x86-64 CPU with AVX2 or better, and the fingerprint of what a run actually computed with.

Single-threaded training is deterministic on one machine; across CPU models the libraries below pick their
code by the processor they find, and each path sums in its own order:

- ATen (torch's elementwise and reduction kernels) dispatches to AVX-512 code where it exists, else
  AVX2: ``ATEN_CPU_CAPABILITY=avx2`` fixes the AVX2 code.
- MKL (every float32 matrix product of torch) has per-processor kernels, and on non-Intel processors
  ignores a requested branch other than its SSE2 "COMPATIBLE" one (its documentation's conditional
  numerical reproducibility): ``MKL_CBWR=COMPATIBLE`` is the only branch that is the same on Intel
  and AMD.
- The CPU kernels (``cgat_dgl.kernels``) are compiled for a fixed instruction-set level,
  ``x86-64-v3`` (AVX2 and FMA), instead of the host's: with AVX-512 their vectors would have 16
  lanes instead of 8 and their lane reductions another order.
- oneDNN is capped at AVX2 as well (``ONEDNN_MAX_CPU_ISA``) for the operations torch sends to it.
- numpy (the graphs' distances and their Gaussian expansion) dispatches its loops to AVX-512 where it
  exists, and OpenBLAS (numpy's and scipy's) picks its kernels by processor: numpy's AVX-512 targets
  are disabled (``NPY_DISABLE_CPU_FEATURES``) and OpenBLAS is fixed to its Haswell (AVX2) kernels
  (``OPENBLAS_CORETYPE``). Both are read when numpy is first imported.

These "portable" settings are the default and are set when the package is imported, before torch
first computes. ``CGAT_NUMERICS=native`` leaves every library on the host's fastest code instead
(its numbers then hold for that CPU model only). What a run computed with is in its tags
(``tags()``), and what changes results is part of its run key (``key()``).
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform
import subprocess
from pathlib import Path

MODE_ENV = "CGAT_NUMERICS"
PORTABLE = "portable"
NATIVE = "native"
MODES = (PORTABLE, NATIVE)

# Each library's own switch, read when it first computes.
PORTABLE_SETTINGS = {
    "ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "COMPATIBLE", "ONEDNN_MAX_CPU_ISA": "AVX2",
    # numpy 1.26's AVX-512 dispatch targets (a target the host lacks is accepted and ignored)
    "NPY_DISABLE_CPU_FEATURES": "AVX512F AVX512CD AVX512_KNL AVX512_KNM AVX512_SKX AVX512_CLX AVX512_CNL AVX512_ICL",
    "OPENBLAS_CORETYPE": "Haswell",  # only where the host runs AVX2 code (else OpenBLAS would fault)
}
# What the portable settings give once the libraries have read them.
PORTABLE_ATEN = "AVX2"
PORTABLE_MKL = "COMPATIBLE"
PORTABLE_NUMPY = "no AVX-512"
PORTABLE_OPENBLAS = "Haswell"
# The CPU kernels' instruction-set level (GCC's -march), and the CPU flags it needs.
KERNEL_ISA = "x86-64-v3"

_ISA_FLAGS = {
    "x86-64-v2": {"cx16", "lahf_lm", "popcnt", "sse4_1", "sse4_2", "ssse3"},
    "x86-64-v3": {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"},
    "x86-64-v4": {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"},
}
# mkl_cbwr_get's answers (mkl_cbwr.h)
_MKL_BRANCHES = {
    0: "off", 1: "off", 2: "AUTO", 3: "COMPATIBLE", 4: "SSE2", 6: "SSSE3", 7: "SSE4_1", 8: "SSE4_2", 9: "AVX",
    10: "AVX2", 11: "AVX512_MIC", 12: "AVX512", 13: "AVX512_MIC_E1", 14: "AVX512_E1",
}


def mode() -> str:
    value = os.environ.get(MODE_ENV, PORTABLE) or PORTABLE
    if value not in MODES:
        raise ValueError(f"{MODE_ENV}={value!r}: choose one of {', '.join(MODES)}")
    return value


def pin() -> None:
    """Set the portable settings (unless CGAT_NUMERICS=native) where the user has not set them.
    Effective only before torch first computes: the package calls it when it is imported."""
    if mode() == PORTABLE:
        for name, value in PORTABLE_SETTINGS.items():
            if name == "OPENBLAS_CORETYPE" and not runs_kernel_isa():
                continue
            os.environ.setdefault(name, value)


@functools.lru_cache(maxsize=None)
def _cpuinfo() -> dict[str, str]:
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            name, _, value = line.partition(":")
            name = name.strip()
            if name and name not in fields:
                fields[name] = value.strip()
            if not name:  # the first processor is enough
                break
    except OSError:
        pass
    return fields


def cpu_model() -> str:
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def isa_level(flags: set[str] | None = None) -> str:
    """The host's x86-64 micro-architecture level (x86-64, -v2, -v3, -v4), or the machine's name elsewhere."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return platform.machine()
    if flags is None:
        flags = set(_cpuinfo().get("flags", "").split())
    level = "x86-64"
    for name, needed in _ISA_FLAGS.items():
        if not needed <= flags:
            break
        level = name
    return level


def runs_kernel_isa() -> bool:
    """Whether this CPU runs code compiled for KERNEL_ISA."""
    order = ["x86-64", *_ISA_FLAGS]
    level = isa_level()
    return level in order and order.index(level) >= order.index(KERNEL_ISA)


def aten_capability() -> str:
    """The code ATen dispatches to (its first call fixes it)."""
    import torch

    return str(torch.backends.cpu.get_cpu_capability())


def mkl_branch() -> str:
    """The MKL code branch of torch's matrix products ("none" without MKL). Asking initialises MKL,
    which fixes its branch."""
    import torch

    library = Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"
    try:
        get = ctypes.CDLL(str(library)).mkl_serv_cbwr_get
    except (OSError, AttributeError):
        return "none"
    get.restype = ctypes.c_int
    value = get(ctypes.c_int(1))  # MKL_CBWR_BRANCH
    return _MKL_BRANCHES.get(value, str(value))


def numpy_simd() -> str:
    """Whether numpy's loops may take AVX-512 code ("AVX-512" or "no AVX-512")."""
    from numpy.core._multiarray_umath import __cpu_features__ as features

    return "AVX-512" if features.get("AVX512F") else "no AVX-512"


def openblas_core() -> str:
    """The kernels of the OpenBLAS libraries loaded in this process (numpy's, scipy's), comma-separated."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "unknown"
    cores = sorted({str(info.get("architecture")) for info in threadpool_info() if info.get("internal_api") == "openblas"})
    return ",".join(cores) or "none"


@functools.lru_cache(maxsize=None)
def compiler() -> str:
    """The C++ compiler the CPU kernels are built with (its version changes their code)."""
    command = os.environ.get("CXX", "c++")
    try:
        version = subprocess.run([command, "-dumpfullversion", "-dumpversion"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "none"
    return f"{Path(command).name}-{version.stdout.split()[0]}" if version.returncode == 0 and version.stdout else "none"


def kernel_cflags() -> list[str]:
    """The instruction-set flags of the CPU kernels' build, with any CGAT_KERNEL_CFLAGS (which exist to
    emulate another machine's code, e.g. -DCGAT_VECTOR_LANES=16 for AVX-512's lane count)."""
    isa = ["-march=native"] if mode() == NATIVE else [f"-march={KERNEL_ISA}", "-mtune=generic"]
    return isa + os.environ.get("CGAT_KERNEL_CFLAGS", "").split()


def portable() -> bool:
    """Whether this process computes with the portable settings."""
    return (mode() == PORTABLE and aten_capability() == PORTABLE_ATEN and mkl_branch() == PORTABLE_MKL
            and numpy_simd() == PORTABLE_NUMPY and openblas_core() in (PORTABLE_OPENBLAS, "none"))


def key(device: str, kernel_groups: tuple[str, ...] = ()) -> str:
    """What decides the numbers of a run on ``device`` ("cpu" or "cuda"), for its run key: equal keys,
    bitwise equal results. ``kernel_groups``: the CPU kernel groups the model runs (none: torch
    operations), named so that a kernel added or removed is another key."""
    if device.startswith("cuda"):
        import torch

        return f"cuda:{torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'unknown'}"
    if portable():
        base = PORTABLE
    else:  # the host's own code paths: the numbers hold for this CPU model only
        base = (f"{mode()}:{cpu_model()}:{isa_level()}:aten-{aten_capability()}:mkl-{mkl_branch()}"
                f":numpy-{numpy_simd()}:openblas-{openblas_core()}")
    code = f"kernels[{','.join(kernel_groups)}]:{' '.join(kernel_cflags())}:{compiler()}" if kernel_groups else "torch-ops"
    return f"cpu:{base}:{code}"


def tags() -> dict[str, str]:
    """What a run computed with, as MLflow tags."""
    return {
        "cgat.numerics": mode() if mode() == NATIVE or portable() else f"{PORTABLE} (not in effect)",
        "cgat.cpu_model": cpu_model(),
        "cgat.isa_level": isa_level(),
        "cgat.aten_capability": aten_capability(),
        "cgat.mkl_branch": mkl_branch(),
        "cgat.numpy_simd": numpy_simd(),
        "cgat.openblas_core": openblas_core(),
    }
