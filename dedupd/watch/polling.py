"""The polling backend, for network filesystems and `polling = true` roots, and its mass-deletion guard.

A stat snapshot of the tree (excluded trees never walked) every `poll_interval_s`, diffed with watchdog's
DirectorySnapshotDiff. A poll that loses more than `mass_deletion_guard` (default half) of the root's files at
once, and at least MASS_DELETION_MIN_FILES, is an outage, not deletions. Polled roots get no CLOSED events.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import cast

from watchdog.events import (
    DirDeletedEvent,
    DirMovedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
)
from watchdog.observers.api import EventEmitter, EventQueue, ObservedWatch
from watchdog.utils.dirsnapshot import DirectorySnapshot, DirectorySnapshotDiff

from dedupd.watch.events import Outlet, run_logged
from dedupd.watch.policy import PathPolicy, RootSpec
from dedupd.watch.walk import kept_entries

log = logging.getLogger(__name__)

#: A poll that loses fewer files than this is never mistaken for an outage (a small root emptied by its user).
MASS_DELETION_MIN_FILES = 10
#: The share of a polled root's files that, lost in one poll, is an outage rather than deletions.
DEFAULT_MASS_DELETION_GUARD = 0.5


def _diff_events(diff: DirectorySnapshotDiff) -> Iterator[FileSystemEvent]:
    """A snapshot diff as events: moves first, then deletions, creations, modifications; moves of files inside a
    moved directory are left out (the directory move covers them, as with inotify)."""
    dir_moves = sorted((os.fsdecode(a), os.fsdecode(b)) for a, b in diff.dirs_moved)

    def implied(src: bytes | str, dest: bytes | str) -> bool:
        source, target = os.fsdecode(src), os.fsdecode(dest)
        return any(source.startswith(a + "/") and target == b + source[len(a) :] for a, b in dir_moves)

    yield from (DirMovedEvent(a, b) for a, b in dir_moves if not implied(a, b))
    moved_to = dict(diff.files_moved)
    yield from (FileMovedEvent(a, b) for a, b in sorted(diff.files_moved) if not implied(a, b))
    yield from (FileDeletedEvent(p) for p in sorted(diff.files_deleted))
    yield from (DirDeletedEvent(p) for p in sorted(diff.dirs_deleted))
    yield from (FileCreatedEvent(p) for p in sorted(diff.files_created))
    # watchdog names a file that moved and changed by its old path
    yield from (FileModifiedEvent(moved_to.get(p, p)) for p in sorted(diff.files_modified))


def _file_count(snapshot: DirectorySnapshot) -> int:
    return sum(1 for path in snapshot.paths if not snapshot.isdir(path))


def _root_answers(path: str) -> bool:
    try:
        with os.scandir(path) as listing:
            next(listing, None)
    except OSError:
        return False
    return True


class PollingEmitter(EventEmitter):
    """Stat snapshot of the root every poll_interval_s (excluded trees never walked), diffed into events."""

    def __init__(self, spec: RootSpec, policy: PathPolicy, outlet: Outlet, mass_deletion_guard: float) -> None:
        super().__init__(EventQueue(), ObservedWatch(spec.path, recursive=spec.recursive), timeout=spec.poll_interval_s)
        self._guard = mass_deletion_guard
        self._policy = policy
        self._outlet = outlet
        self._reference: DirectorySnapshot | None = None
        self._seen: set[tuple[int, int]] = set()
        self.name = f"dedupd-poll {spec.path}"

    def run(self) -> None:
        run_logged(self._poll, f"polling thread of {self.watch.path}")

    def _poll(self) -> None:
        try:  # taken here, not in start(): check_health() must not walk a large network tree itself
            self._reference = self._snapshot()
        except OSError as exc:
            self._outlet.gone(f"cannot list the root: {exc.strerror}")
            return
        self._outlet.ready()
        EventEmitter.run(self)

    def queue_events(self, timeout: float) -> None:
        if self.stopped_event.wait(timeout) or self._reference is None:
            return
        try:
            snapshot = self._snapshot()
        except OSError as exc:
            if _root_answers(self.watch.path):
                log.warning("poll of %s failed, retrying at the next one: %s", self.watch.path, exc)
            else:
                self._outlet.gone(f"cannot list the root: {exc.strerror}")
                self.stop()
            return
        diff = DirectorySnapshotDiff(self._reference, snapshot)
        lost, before = len(diff.files_deleted), _file_count(self._reference)
        if lost >= MASS_DELETION_MIN_FILES and lost > self._guard * before:
            self._outlet.gone(f"{lost} of {before} files vanished in one poll: treated as an outage, not deletions")
            self.stop()
            return
        self._reference = snapshot
        for event in _diff_events(diff):
            self._outlet.event(event)

    def _snapshot(self) -> DirectorySnapshot:
        self._seen.clear()
        return DirectorySnapshot(self.watch.path, recursive=self.watch.is_recursive, listdir=self._listdir)

    def _listdir(self, directory: str | None) -> Iterator[os.DirEntry[str]]:
        # DirectorySnapshot has no loop protection of its own: kept_entries gives a directory seen before no entries
        return iter(kept_entries(cast(str, directory), self._policy, self._seen) or ())
