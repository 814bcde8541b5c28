"""Gives memory back to the kernel once work is done: freed heap, and the pages of a memory-mapped file.

glibc's malloc keeps what Python, Pillow and ONNX Runtime free for reuse, so a process that decoded or
embedded a burst of photos stays at its peak RSS while idle (measured: the daemon's main process at 238 MB
after embedding 47 camera photos, 126 MB after a trim with ONNX Runtime's arena off; BENCHMARKS.md
"Memory"). `release_free_memory` asks glibc to return it (`malloc_trim(0)`, a few milliseconds); callers do
so when they fall idle, never per file. A no-op where the C library is not glibc.

A memory-mapped file (the LMDB store) is different: each page the process reads stays mapped and counts in
its RSS, and a read fault maps the cached pages around it too (the kernel's fault-around, 64 KiB), so a
few tens of thousands of scattered record reads map a whole 2.4 GiB store (BENCHMARKS.md "Archive").
`unmap_file_pages` drops the process's mappings of a file's pages (`madvise(MADV_DONTNEED)`): they stay
in the page cache, and the next read maps one again without I/O. Linux only (/proc/self/maps).
"""

import ctypes
import ctypes.util
import functools
import os
from collections.abc import Callable
from pathlib import Path

_MADV_DONTNEED = 4


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    libc = _libc()
    return getattr(libc, "malloc_trim", None)  # not glibc (musl has no malloc_trim)


@functools.cache
def _madvise() -> Callable[[int, int, int], int] | None:
    libc = _libc()
    madvise = getattr(libc, "madvise", None)
    if madvise is not None:
        madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    return madvise


def release_free_memory() -> bool:
    """Return the heap's free pages to the kernel; True if anything was given back."""
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False


def file_mappings(path: str | os.PathLike[str]) -> list[tuple[int, int]]:
    """(address, length) of each of this process's mappings of the file at `path`, found by its device and
    inode in /proc/self/maps ([] when it is not mapped, or this is not Linux). Reading that file costs a
    few milliseconds in a process with many libraries mapped: callers keep the answer while the mapping
    cannot have moved."""
    try:
        st = os.stat(path)
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return []
    device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}"
    found = []
    for line in maps.splitlines():
        fields = line.split(maxsplit=5)  # start-end perms offset dev inode [path]
        if len(fields) == 6 and fields[3] == device and int(fields[4]) == st.st_ino:
            start, end = (int(x, 16) for x in fields[0].split("-"))
            found.append((start, end - start))
    return found


def unmap_file_pages(mappings: list[tuple[int, int]]) -> None:
    """Drop the pages of file mappings (`file_mappings`) from this process (`madvise(MADV_DONTNEED)`): their
    contents stay in the page cache, and the next read of one maps it again. For a read-only shared mapping
    no data is lost. Every range must still be that mapping: advising memory that was since mapped for
    something else would zero it."""
    madvise = _madvise()
    if madvise is None:
        return
    for start, length in mappings:
        if madvise(start, length, _MADV_DONTNEED) != 0:
            raise OSError(ctypes.get_errno(), f"madvise of {length} bytes at {start:#x}")
