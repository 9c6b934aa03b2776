"""glibc's malloc tuned for PyTorch on the CPU: freed tensor memory stays in the process for the next tensor.

By default glibc serves blocks above a dynamic threshold (at most 32 MiB) with a fresh mmap, returns them to
the kernel when freed, and trims the heap's free top beyond 128 KiB. A training step frees and reallocates the
same large tensors every step (the logits alone are batch tokens × vocabulary × 4 bytes), so each step faulted
its memory in again, page by page: about 18,000 minor faults per step of the 15-minute Multi30k Transformer on a
2-core EPYC (issue 14). With both thresholds at 1 GiB that memory stays mapped. Over 90 s of that config, side by
side, system time fell from 7.1 s to 1.2 s and target tokens/s rose 12 % (1,126 → 1,264). Over 300 s of
`luong.yaml` the gain was 5 %, with peak RSS 1.15 → 1.16 GiB. The cost is fragmentation where one size
recurs: a tensor's aligned block need not fit the hole the last one left, so a 64 MiB tensor made and freed 20
times holds 667 MiB instead of 219 MiB. Other C libraries, and a process whose environment already sets
glibc's malloc (`MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`, or `glibc.malloc` in `GLIBC_TUNABLES`),
are left alone.
"""

from __future__ import annotations

import ctypes
import os
import platform

KEEP_BELOW_BYTES = 1 << 30
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # malloc.h


def user_tuned_malloc() -> bool:
    """Whether the environment already tells glibc's malloc how to behave."""
    return any(name in os.environ for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")) \
        or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", "")


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds to 1 GiB; True if set, False where not glibc or the user chose."""
    if platform.libc_ver()[0] != "glibc" or user_tuned_malloc():
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return all(libc.mallopt(option, ctypes.c_int(KEEP_BELOW_BYTES)) == 1
               for option in (_M_MMAP_THRESHOLD, _M_TRIM_THRESHOLD))
