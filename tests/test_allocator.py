"""``allocator.keep_freed_memory``: large CPU blocks come from the heap, where freed ones are reused, instead of each
being mapped and zero-filled anew; the user's own malloc settings win. (What that does to the commands' time:
``benchmarks/allocator.py``.)"""
from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from diffusion.allocator import SWITCH

# in a fresh interpreter without torch (nothing allocated or freed before): whether the settings were applied, and
# the bytes of malloc's memory-mapped chunks that a 16 MiB block adds. glibc maps a block that size by default
# (its threshold starts at 128 KiB) and unmaps it on free, so each such activation is mapped and zero-filled anew;
# kept, the block comes from the heap, and freed blocks are reused
PROBE = """
import ctypes, importlib.util, sys
spec = importlib.util.spec_from_file_location("allocator", sys.argv[1])
allocator = importlib.util.module_from_spec(spec)
spec.loader.exec_module(allocator)
applied = allocator.keep_freed_memory()

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype, libc.malloc.restype = MallInfo2, ctypes.c_void_p
before = libc.mallinfo2().hblkhd  # the interpreter's own mapped chunks
block = libc.malloc(16 << 20)
print(applied, libc.mallinfo2().hblkhd - before)
libc.free(ctypes.c_void_p(block))
"""


def _probe(**env) -> tuple[bool, int]:
    from diffusion import allocator

    environ = {k: v for k, v in os.environ.items()
               if not k.startswith("MALLOC_") and k not in (SWITCH, "GLIBC_TUNABLES")}
    out = subprocess.run([sys.executable, "-c", PROBE, allocator.__file__], env={**environ, **env},
                         capture_output=True, text=True, check=True).stdout.split()
    return out[0] == "True", int(out[1])


LINUX = pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                           reason="glibc's malloc")


@LINUX
def test_large_blocks_come_from_the_heap_where_freed_ones_are_reused():
    assert _probe() == (True, 0)


@LINUX
def test_without_it_glibc_maps_each_large_block():
    """The control: what the setting changes."""
    applied, mapped = _probe(**{SWITCH: "default"})
    assert not applied and mapped >= 16 << 20


@pytest.mark.parametrize("name,value", [(SWITCH, "default"), ("MALLOC_ARENA_MAX", "2"),
                                        ("MALLOC_MMAP_THRESHOLD_", "131072"),
                                        ("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=131072")])
def test_the_users_malloc_settings_win(monkeypatch, name, value):
    from diffusion.allocator import keep_freed_memory

    monkeypatch.setenv(name, value)
    assert keep_freed_memory() is False  # returns before any mallopt: nothing changed in this process
