"""watchdog events -> `dedupd.records.Change`s for one root (`event_changes`), and `Outlet`, the door an emitter
delivers through: converted for its root and dropped once the emitter is retired."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Protocol

from watchdog.events import FileSystemEvent

from dedupd.pathnames import is_under
from dedupd.records import Change, ChangeKind
from dedupd.watch.policy import PathPolicy, RootSpec

log = logging.getLogger(__name__)


_FILE_KINDS = {
    "created": ChangeKind.CREATED,
    "modified": ChangeKind.MODIFIED,
    "attrib": ChangeKind.MODIFIED,  # cp -p / rsync set the mtime after the close: the pipeline must re-check
    "closed": ChangeKind.CLOSED,
    "deleted": ChangeKind.DELETED,
}
_MOVED_IN = "moved in"


def event_changes(event: FileSystemEvent, policy: PathPolicy, watched_root: str) -> list[Change]:
    """The Changes one watchdog event means for a root ("" paths are outside every watch)."""
    root = policy.root

    def reported(path: bytes | str) -> str:
        text = os.fsdecode(path)
        inside = watched_root != root and is_under(text, watched_root)
        return root + text[len(watched_root.rstrip("/")) :] if inside else text

    src, dest = reported(event.src_path), reported(event.dest_path)
    if event.event_type == "moved":
        if event.is_synthetic:  # watchdog's per-file echo of the directory move reported just before
            return []
        if event.is_directory:
            from_inside, to_inside = policy.keeps_dir(src), policy.keeps_dir(dest)
        else:  # the source is gone; the destination is what lstat says (a symlink stays unseen)
            from_inside, to_inside = policy.keeps_file(src), policy.keeps_live_file(dest)
        if from_inside and to_inside:
            kind = ChangeKind.DIR_MOVED if event.is_directory else ChangeKind.MOVED
            return [Change(kind, src, root, dest)]
        if from_inside:
            return [Change(ChangeKind.DIR_DELETED if event.is_directory else ChangeKind.DELETED, src, root)]
        if to_inside and not event.is_directory:  # a directory's files arrive as their own created events
            return [Change(ChangeKind.CREATED, dest, root, reason=_MOVED_IN)]
        return []
    if event.is_directory:
        return (
            [Change(ChangeKind.DIR_DELETED, src, root)]
            if event.event_type == "deleted" and policy.keeps_dir(src)
            else []
        )
    file_kind = _FILE_KINDS.get(event.event_type)
    if file_kind is None or not policy.keeps_file(src):
        return []
    if file_kind is not ChangeKind.DELETED and not policy.keeps_live_file(src):
        return []  # a symlink (not followed): the scan never lists it either
    reason = _MOVED_IN if file_kind is ChangeKind.CREATED and event.is_synthetic else ""
    return [Change(file_kind, src, root, reason=reason)]


class Receiver(Protocol):
    """What an `Outlet` delivers to: one root's state machine (`watch.root.Root`), which drops what an emitter of
    an older epoch still sends."""

    @property
    def spec(self) -> RootSpec: ...

    @property
    def policy(self) -> PathPolicy: ...

    def deliver(self, change: Change, epoch: int) -> None: ...

    def went_offline(self, reason: str, epoch: int) -> None: ...

    def baseline_taken(self, epoch: int) -> None: ...


class Outlet:
    """Where one emitter sends its events: converted for its root, and delivered only while it is current."""

    def __init__(self, root: Receiver, epoch: int, watched_root: str) -> None:
        self._root = root
        self._epoch = epoch
        self.watched_root = watched_root

    def event(self, event: FileSystemEvent) -> None:
        for change in event_changes(event, self._root.policy, self.watched_root):
            self._root.deliver(change, self._epoch)

    def lost(self, reason: str) -> None:
        path = self._root.spec.path
        self._root.deliver(Change(ChangeKind.RESCAN, path, path, reason=reason), self._epoch)

    def gone(self, reason: str) -> None:
        self._root.went_offline(reason, self._epoch)

    def ready(self) -> None:
        self._root.baseline_taken(self._epoch)



def run_logged(body: Callable[[], None], what: str) -> None:
    """Runs a watcher thread's loop; an exception ends the thread with a log line (check_health() restarts it)."""
    try:
        body()
    except Exception:
        log.exception("%s died; check_health() will restart it and rescan", what)
