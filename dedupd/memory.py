"""Gives freed heap memory back to the kernel once work is done.

glibc's malloc keeps what Python, Pillow and ONNX Runtime free for reuse, so a process that decoded or
embedded a burst of photos stays at its peak RSS while idle (measured: the daemon's main process at 238 MB
after embedding 47 camera photos, 126 MB after a trim with ONNX Runtime's arena off; BENCHMARKS.md
"Memory"). `release_free_memory` asks glibc to return it (`malloc_trim(0)`, a few milliseconds); callers do
so when they fall idle, never per file. A no-op where the C library is not glibc.
"""

import ctypes
import ctypes.util
import functools
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        return libc.malloc_trim  # type: ignore[no-any-return]
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None


def release_free_memory() -> bool:
    """Return the heap's free pages to the kernel; True if anything was given back."""
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False
