"""The inotify backend: one root's emitter thread, turning its inotify events into Changes.

Why this is more than `Observer().schedule(...)`: watchdog hides exactly the failures a long-running watcher has
to act on (REQUIREMENTS.md section 5), so each root gets its own inotify instance, and the classes of
`_watchdog_private` (the only code that touches watchdog's internals)

- apply the root's exclude globs and symlink policy *before* a directory gets a watch (watchdog walks and watches
  every subdirectory itself, `@eaDir` thumbnail trees included),
- report an inotify queue overflow (watchdog 7.1.0 rebuilds its watches but tells nobody) as RESCAN,
- notice directories left unwatched because `fs.inotify.max_user_watches` ran out (watchdog 7.x drops ENOSPC),
- bound what is held in memory: the inotify reader stops reading while `backlog` events wait for the sink, so a
  slow consumer overflows the kernel queue (reported, then reconciled by a scan) instead of growing this process.
This module uses only watchdog's public emitter hooks (on_thread_start, build_and_queue_event, queue_event).
"""

from __future__ import annotations

import os

from watchdog.events import FileSystemEvent
from watchdog.observers.api import EventQueue, ObservedWatch
from watchdog.observers.inotify import InotifyEmitter
from watchdog.observers.inotify_c import InotifyConstants, Mask
from watchdog.observers.inotify_move_event_grouper import GroupedInotifyEvent, PathedInotifyEvent

from dedupd.watch._watchdog_private import InotifyReader, WatchGroup, use_watch_group
from dedupd.watch.events import Outlet, run_logged
from dedupd.watch.policy import PathPolicy

_EVENT_MASK = Mask(
    InotifyConstants.IN_CREATE
    | InotifyConstants.IN_MODIFY
    | InotifyConstants.IN_ATTRIB
    | InotifyConstants.IN_CLOSE_WRITE
    | InotifyConstants.IN_MOVED_FROM
    | InotifyConstants.IN_MOVED_TO
    | InotifyConstants.IN_DELETE
    | InotifyConstants.IN_DELETE_SELF
    | InotifyConstants.IN_MOVE_SELF  # the root renamed away: offline at once, not at the next health check
)  # no IN_OPEN / IN_CLOSE_NOWRITE: every read by the encoder would come back as an event
_ROOT_SIGNALS = InotifyConstants.IN_Q_OVERFLOW | InotifyConstants.IN_MOVE_SELF | InotifyConstants.IN_UNMOUNT


class RootInotifyEmitter(InotifyEmitter):
    """Turns one root's inotify events into Changes on its own thread (the thread that calls the sink)."""

    def __init__(
        self, watch: ObservedWatch, *, reader: InotifyReader, outlet: Outlet, policy: PathPolicy, backlog: int
    ) -> None:
        super().__init__(EventQueue(), watch, inotify_fd=reader)  # the queue is unused: events go to the outlet
        self._reader = reader
        self._outlet = outlet
        self._policy = policy
        self._backlog_limit = backlog
        self._root_bytes = os.fsencode(watch.path)
        self.group: WatchGroup | None = None
        self.name = f"dedupd-inotify {watch.path}"

    def get_event_mask_from_filter(self) -> Mask:
        return _EVENT_MASK

    def on_thread_start(self) -> None:
        # Runs in the starting thread: the watches exist when start() returns.
        self.group = WatchGroup(
            self._reader,
            self._root_bytes,
            event_mask=_EVENT_MASK,
            is_recursive=self.watch.is_recursive,
            follow_symlink=self.watch.follow_symlink,
            policy=self._policy,
            backlog=self._backlog_limit,
        )
        use_watch_group(self, self.group)

    def run(self) -> None:
        run_logged(super().run, f"inotify emitter thread of {self.watch.path}")

    def build_and_queue_event(self, event: GroupedInotifyEvent, *, full_events: bool = True) -> None:
        # full_events: an unpaired move is reported as a move from/to "" rather than as created/deleted.
        if isinstance(event, PathedInotifyEvent) and event.ev.mask & _ROOT_SIGNALS:
            if event.ev.is_queue_overflow:
                self._outlet.lost("inotify queue overflow: events were lost")
            elif event.path == self._root_bytes:
                self._outlet.gone(
                    "the root was moved away" if event.ev.is_move_self else "its filesystem was unmounted"
                )
                self.stop()
            return  # a subdirectory's own move or unmount says nothing its parent's events do not
        super().build_and_queue_event(event, full_events=True)

    def queue_event(self, event: FileSystemEvent) -> None:
        if event.is_directory and event.event_type == "deleted" and event.src_path == self.watch.path:
            self._outlet.gone("the root directory was deleted")  # watchdog stops this emitter next
            return
        if event.is_directory and event.event_type == "moved" and not event.is_synthetic and self.group is not None:
            if not self._policy.keeps_dir(os.fsdecode(event.dest_path)):  # moved out, or into an excluded directory
                self.group.forget(os.fsdecode(event.dest_path or event.src_path))
        self._outlet.event(event)
