"""Exclusive lock files that name their holder: one dedupd per state directory and per control socket.

A lock is an `flock(LOCK_EX)` on a small file holding the holder's pid. The kernel drops it when the holder
exits, however it exits (SIGKILL included), so a lock is never stale; the pid inside is only for the message
a second process prints. Why flock and not LMDB's own lock.mdb: LMDB's lock allows many processes (readers
and one writer at a time), and a deleted lock.mdb is silently recreated. Stdlib only.
"""

import contextlib
import fcntl
import os
from pathlib import Path

from dedupd.errors import DedupdError


class Locked(DedupdError):
    """Another process holds the lock; `pid` is its pid when it could be read."""

    def __init__(self, message: str, pid: int | None) -> None:
        super().__init__(message)
        self.pid = pid


def _holder(fd: int) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(os.pread(fd, 32, 0).decode("ascii").strip())
    return None


def hold(path: str | os.PathLike[str], what: str) -> int:
    """Take the lock at `path` (created 0600, a symlink refused) for `what` (e.g. "the state dir /x").

    Returns the open descriptor: the lock lasts until it is closed. Raises Locked naming the holder's pid,
    or OSError when the file cannot be created.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = _holder(fd)
        os.close(fd)
        who = f"dedupd pid {pid}" if pid is not None else "another process"
        raise Locked(f"{what} is in use by {who} (lock {Path(path)})", pid) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    return fd
