"""Keep freed tensor memory in the process on glibc, so that training does not pay page faults.

A training step allocates and frees tensors of tens of megabytes thousands of times. glibc's
malloc serves blocks that large with mmap and returns them to the system on free, so every new
tensor is fresh memory whose pages fault in on first touch: about half the time of a step of the
cpu model on two cores. Raising the mmap and trim thresholds keeps those blocks in the heap for
reuse (the same as starting the process with MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_).
The cost is that the heap keeps its high-water mark until the process ends.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
# glibc caps the mmap threshold at HEAP_MAX / 2 = 32 MiB on 64-bit (larger values are refused).
MMAP_THRESHOLD = 32 * 2**20
TRIM_THRESHOLD = 2**30
TOP_PAD = 64 * 2**20

_configured: bool | None = None


def keep_freed_memory() -> bool:
    """Configure glibc's malloc as above (once per process); False where it is not glibc."""
    global _configured
    if _configured is not None:
        return _configured
    _configured = False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = all(
            libc.mallopt(option, value) == 1
            for option, value in (
                (_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
                (_M_TRIM_THRESHOLD, TRIM_THRESHOLD),
                (_M_TOP_PAD, TOP_PAD),
            )
        )
    except (OSError, AttributeError):
        ok = False
    if not ok:
        log.warning("could not configure glibc malloc; training runs slower")
    _configured = ok
    return ok
