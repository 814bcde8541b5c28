"""The only code that touches watchdog's private inotify internals (hence the `watchdog==7.1.0` pin:
7.1.1, a patch release, keeps its watches in a directory tree and computes the maps `_add_callback` writes, so
with it the group would hold no watch and see no file).

Per hook, what watchdog's public API lacks:
- `Backlog` replaces `InotifyWatchGroup._move_event_grouper`: watchdog's queue of read events is unbounded and
  has no way to make the reader wait, so a slow sink would grow this process instead of overflowing the kernel
  queue (which is reported).
- `WatchGroup._add_all_callbacks` is overridden: watchdog walks and watches every subdirectory, with no filter,
  so excluded trees (`@eaDir`) would take watches; the override walks with the root's policy.
- `WatchGroup._add_callback` is overridden, writing `_active_callbacks_by_path` / `_active_callbacks_by_watch`
  itself: watchdog drops ENOSPC (watch limit) silently and returns -1 for EACCES; the override keeps which
  directories got no watch, so the root can say it is degraded and name the sysctl.
- `WatchGroup.on_queue_overflow` is extended: watchdog re-adds its watches after IN_Q_OVERFLOW but tells nobody;
  the override queues a marker event that becomes a RESCAN.
- `WatchGroup.forget` calls `_remove_callbacks` under `_lock`: watchdog keeps watching a directory moved out of
  the root under its old path, and has no public call to drop a subtree's watches.
- `InotifyReader` clears the close-on-exec gap of `InotifyFD._inotify_fd`: watchdog opens it inheritable, so a
  forked worker would keep the root's watches alive; there is no public option.
- `use_watch_group` sets `InotifyEmitter._inotify`: the emitter has no public way to take a watch group it did
  not build itself.
"""

from __future__ import annotations

import errno
import os
import threading
from dataclasses import dataclass, field
from typing import cast

from watchdog.observers.inotify import InotifyEmitter, InotifyWatchGroup
from watchdog.observers.inotify_c import InotifyConstants, InotifyEvent, InotifyFD, WatchDescriptor
from watchdog.observers.inotify_move_event_grouper import (
    GroupedInotifyEvent,
    InotifyMoveEventGrouper,
    PathedInotifyEvent,
)
from watchdog.version import VERSION_INFO as WATCHDOG_VERSION

from dedupd.watch.events import run_logged
from dedupd.watch.policy import PathPolicy
from dedupd.watch.walk import walk

if tuple(WATCHDOG_VERSION[:3]) != (7, 1, 0):  # the classes below override watchdog 7.1.0's private inotify internals
    raise ImportError(f"dedupd.watch is written against watchdog 7.1.0, found {WATCHDOG_VERSION}")

#: Events per root read from inotify but not yet taken by the sink; beyond it the kernel queue fills instead.
DEFAULT_BACKLOG = 4096

OVERFLOW = InotifyEvent(WatchDescriptor(-1), InotifyConstants.IN_Q_OVERFLOW, 0, b"")


class Backlog(InotifyMoveEventGrouper):
    """watchdog's move-pairing queue with a bound: the inotify reader waits (outside any watchdog lock) while
    `limit` events are unread, so a slow sink overflows the kernel queue - which is reported - not our memory.
    Counts put_event() calls; a paired move is two of them."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self._limit = limit
        self._pending = 0
        self._closed = False
        self._room = threading.Condition()

    def put_event(self, event: PathedInotifyEvent) -> None:
        super().put_event(event)
        with self._room:
            self._pending += 1

    def read_event(self) -> GroupedInotifyEvent | None:
        event = super().read_event()
        if event is not None:
            with self._room:
                self._pending -= 1 if isinstance(event, PathedInotifyEvent) else 2
                self._room.notify_all()
        return event

    def discard_pending_events(self) -> None:
        super().discard_pending_events()
        with self._room:
            self._pending = 0
            self._room.notify_all()

    def close(self) -> None:
        super().close()
        with self._room:
            self._closed = True
            self._room.notify_all()

    def wait_for_room(self) -> None:
        with self._room:
            self._room.wait_for(lambda: self._pending < self._limit or self._closed)

    @property
    def pending(self) -> int:
        """Events read from inotify that the emitter has not taken yet (a held IN_MOVED_FROM counts)."""
        with self._room:
            return self._pending


@dataclass(eq=False)
class WatchGroup(InotifyWatchGroup):
    """The watches of one root, added only where the policy keeps a directory."""

    policy: PathPolicy | None = None
    backlog: int = DEFAULT_BACKLOG
    #: Directories that got no watch because the watch limit was reached (appended by the reader thread).
    watch_limit_hits: set[str] = field(default_factory=set, init=False)

    def __post_init__(self) -> None:
        self._backlog = Backlog(self.backlog)
        self._move_event_grouper = self._backlog
        super().__post_init__()  # adds the watches

    @property
    def watch_count(self) -> int:
        return len(self._active_callbacks_by_watch)

    @property
    def pending_events(self) -> int:
        """Events of this root read from inotify and not yet turned into Changes for the sink."""
        return self._backlog.pending

    def _add_all_callbacks(self, path: bytes) -> None:
        policy = cast(PathPolicy, self.policy)
        top = os.fsdecode(path)
        if path != self.path and not policy.keeps_node(top, is_link=os.path.islink(top), is_dir=lambda: True):
            return
        try:
            for directory, _entries in walk(top, policy, on_error=lambda _d, _e: None):
                self._add_callback(os.fsencode(directory))
        except OSError:
            if path == self.path:
                raise  # the root itself cannot be listed

    def _add_callback(self, path: bytes) -> None:
        # watchdog's bookkeeping, but keeping why a subdirectory got no watch (watchdog 7 drops ENOSPC).
        try:
            wd = self._inotify_fd.add_callback(path, self.event_mask, self._callback, self._id)
        except OSError as exc:
            if path == self.path:
                raise
            if exc.errno == errno.ENOSPC:
                self.watch_limit_hits.add(os.fsdecode(path))
            return
        if wd < 0:  # watchdog's InotifyFD returns -1 instead of raising EACCES
            self._inotify_fd.remove_callbacks([(wd, self._id)])
            if path == self.path:
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fsdecode(path))
            return
        self._active_callbacks_by_path[path] = wd
        self._active_callbacks_by_watch[wd] = path

    def on_event(self, event: InotifyEvent) -> None:
        super().on_event(event)
        self._backlog.wait_for_room()

    def on_queue_overflow(self) -> None:
        super().on_queue_overflow()  # drops the queued events and re-adds the watches
        if self.is_active:
            self._backlog.put_event(PathedInotifyEvent(OVERFLOW, self.path))

    def forget(self, directory: str) -> None:
        """Drop the watches of a tree that left the root (watchdog keeps watching it under its old path)."""
        top = os.fsencode(directory)
        below = top + b"/"
        with self._lock:
            if self.is_active:
                paths = self._active_callbacks_by_path.items()
                self._remove_callbacks([wd for p, wd in paths if p == top or p.startswith(below)])


class InotifyReader(InotifyFD):
    """watchdog's inotify instance and reader thread; one per root, so an overflow concerns exactly one root."""

    def __init__(self) -> None:
        super().__init__()
        # watchdog's inotify_init() fd is inheritable: a forked worker would keep the root's watches alive.
        os.set_inheritable(self._inotify_fd, False)

    def run(self) -> None:
        run_logged(super().run, "inotify reader thread")


def use_watch_group(emitter: InotifyEmitter, group: WatchGroup) -> None:
    """Makes `emitter` read from `group` (a watch group it did not build)."""
    emitter._inotify = group
