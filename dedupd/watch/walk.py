"""The tree walk: `walk()` (directories and the entries a root's policy keeps) and `scan()` (every regular file
of a root), shared by the watches, the start-up scan, reconciles and the command-line walkers."""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Callable, Iterator

from dedupd.watch.policy import PathPolicy, RootSpec, entry_is_dir

log = logging.getLogger(__name__)


def kept_entries(directory: str, policy: PathPolicy, seen: set[tuple[int, int]]) -> list[os.DirEntry[str]] | None:
    """The entries of `directory` that `policy` keeps, or None when symlinks are followed and `seen` already holds
    its (device, inode) (so link loops end; `seen` gains it otherwise). Raises OSError when it cannot be listed."""
    if policy.follow_symlinks:
        st = os.stat(directory)
        if (st.st_dev, st.st_ino) in seen:
            return None
        seen.add((st.st_dev, st.st_ino))
    with os.scandir(directory) as listing:
        return [entry for entry in listing if policy.keeps_entry(entry)]


def walk(
    top: str, policy: PathPolicy, on_error: Callable[[str, OSError], None]
) -> Iterator[tuple[str, list[os.DirEntry[str]]]]:
    """(directory, entries the policy keeps) for `top` and every kept directory below it, iteratively.

    A `top` that cannot be listed raises; any other directory that cannot goes to `on_error` and is skipped.
    Followed symlinks are walked once per (device, inode), so link loops end.
    """
    seen: set[tuple[int, int]] = set()
    stack = [top]
    while stack:
        directory = stack.pop()
        try:
            entries = kept_entries(directory, policy, seen)
        except OSError as exc:
            if directory == top:
                raise
            on_error(directory, exc)
            continue
        if entries is None:
            continue
        yield directory, entries
        stack.extend(e.path for e in entries if entry_is_dir(e, policy.follow_symlinks))  # kept dirs: recursive roots


def scan(
    spec: RootSpec | object, on_error: Callable[[str, OSError], None] | None = None, *, under: str | None = None
) -> Iterator[tuple[str, os.stat_result]]:
    """(path, stat) of every regular file of a root, with the watcher's policy (excludes, include, hidden files,
    symlinks, recursion), in no particular order. `under`: only the subtree below this directory of the root
    (a partial rescan), still with the root's policy (ValueError if it is not in the root; nothing if excluded).

    Raises OSError when the root (or `under`) cannot be listed: the caller must treat it as offline or gone, never
    as empty. A subdirectory that cannot be listed is skipped and passed to `on_error` (default: one warning at
    the end); its files are then missing from the scan, so a reconcile should not delete records below it.
    """
    spec = RootSpec.of(spec)
    policy = PathPolicy(spec)
    top = spec.path if under is None else os.path.normpath(under)
    if top != spec.path:
        if policy.relative(top) is None:
            raise ValueError(f"{top} is not inside the root {spec.path}")
        if not policy.keeps_dir(top):
            return
    unreadable: list[str] = []

    def note(directory: str, exc: OSError) -> None:
        unreadable.append(directory)
        if on_error is not None:
            on_error(directory, exc)

    for _directory, entries in walk(top, policy, note):
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=policy.follow_symlinks)
            except OSError as exc:  # vanished since the listing, a broken link, or nested beyond PATH_MAX
                if exc.errno == errno.ENAMETOOLONG:
                    note(entry.path, exc)
                continue
            if stat.S_ISREG(st.st_mode):
                yield entry.path, st
    if unreadable and on_error is None:
        log.warning("scan of %s skipped %d unreadable directories, e.g. %s", spec.path, len(unreadable), unreadable[0])
