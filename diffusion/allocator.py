"""Keep freed CPU tensors in the C heap: glibc malloc settings for the command-line entry points.

On Linux, PyTorch's CPU tensors come from glibc's ``malloc``. glibc serves a request above its mmap threshold
(128 KiB at start, raised adaptively) with a fresh ``mmap`` and returns it with ``munmap`` when it is freed, and it
gives the heap's free top back to the system above 128 KiB. A network at batch 256 allocates and frees MiB-sized
activations layer by layer, so every forward pass maps, page-faults in (the kernel zero-fills each page) and
unmaps them anew: in the time-grid fit of ``sampler=fewstep`` on the default MNIST model, a quarter of the CPU
time was the kernel's (61 s of 245 s, 30 million page faults; ``benchmarks/allocator.md``).

``keep_freed_memory()`` fixes the mmap threshold at glibc's maximum (32 MiB on 64-bit) and stops the trimming
(``mallopt``), so freed blocks are reused from the heap: that fit then takes 0.76 of the time, sampling at batch 256
0.90, training (batch 64) 0.97. The cost is resident memory: the heap keeps its peak (+10-25% here).
It changes nothing where glibc is not the C library, where the user set glibc's own ``MALLOC_*`` variables or
``GLIBC_TUNABLES=glibc.malloc...`` (theirs win), or with ``DIFFUSION_MALLOC=default``. Under a preloaded allocator
(jemalloc, tcmalloc) it sets the unused glibc one: harmless.
"""
from __future__ import annotations

import ctypes
import os
import platform
import sys

#: ``mallopt`` parameters (glibc's malloc.h)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
#: glibc's largest mmap threshold on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX: 4 MiB * sizeof(long))
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024
#: the environment switch: ``default`` leaves glibc as it is
SWITCH = "DIFFUSION_MALLOC"


def keep_freed_memory() -> bool:
    """Set glibc's malloc to keep freed memory for reuse (see the module docstring); True when it did."""
    if (os.environ.get(SWITCH, "") == "default" or any(k.startswith("MALLOC_") for k in os.environ)
            or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", "")):
        return False
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    settings = ((M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX), (M_TRIM_THRESHOLD, 2**31 - 1), (M_TOP_PAD, 256 * 1024 * 1024))
    return all(libc.mallopt(param, value) == 1 for param, value in settings)


__all__ = ["keep_freed_memory", "SWITCH"]
