"""Roots -> `Change` events, and `scan()` for catch-up: the only watchdog user.

Why this is more than `Observer().schedule(...)`: watchdog hides exactly the failures a long-running watcher has
to act on (REQUIREMENTS.md section 5), so each root gets its own inotify instance and a few subclasses of
watchdog's inotify classes (pinned to watchdog 7.1: they override private methods) that

- apply the root's exclude globs and symlink policy *before* a directory gets a watch (watchdog walks and watches
  every subdirectory itself, `@eaDir` thumbnail trees included),
- report an inotify queue overflow (watchdog 7.1 rebuilds its watches but tells nobody) as RESCAN,
- notice directories left unwatched because `fs.inotify.max_user_watches` ran out (watchdog 7.x drops ENOSPC):
  the root becomes `degraded`, the status names the sysctl to raise, and the root is rescanned every
  `poll_interval_s` until the watches fit,
- bound what is held in memory: the inotify reader stops reading while `backlog` events wait for the sink, so a
  slow consumer overflows the kernel queue (reported, then reconciled by a scan) instead of growing this process.

`check_health()`, called every few seconds by the daemon, restarts a dead watcher thread (then RESCAN), probes
every root from a helper thread so a hung network mount cannot hang the caller, and drives the timers of degraded
and offline roots. A root that vanishes, is renamed away, unmounted or stops answering is `offline`
(ROOT_OFFLINE): nothing is reported as deleted and its records stay; when it is back, ROOT_ONLINE asks the
pipeline to reconcile. An empty directory in place of the root we knew (an unmounted mount point) is not "back".

Network filesystems (`polling = "auto"`, see NETWORK_FILESYSTEMS) and `polling = true` roots are polled: a stat
snapshot of the tree (excluded trees never walked) every `poll_interval_s`, diffed with watchdog's
DirectorySnapshotDiff. A poll that loses more than `mass_deletion_guard` (default half) of the root's files at
once, and at least MASS_DELETION_MIN_FILES, is an outage, not deletions. Polled roots get no CLOSED events.

What the sink receives (`dedupd.records.Change`, absolute paths under the configured root path, `root` = that path):
- CREATED (creat(), a synthetic event for a file inside a new directory, a file moved in from outside the root or
  from a hidden/excluded name: the last ones carry reason "moved in", their content is complete), MODIFIED
  (data or mtime/metadata changed; consecutive duplicates are collapsed), CLOSED (closed after writing),
  DELETED (removed, or moved out of the root or to a hidden/excluded name), MOVED(path -> dest) within the root.
- DIR_MOVED(path -> dest) for a directory renamed within the root: the files below it get no MOVED of their own.
  DIR_DELETED for a directory removed or moved out (its files may also arrive as DELETED first).
- RESCAN(path=root, reason): events were or may have been lost (queue overflow, watch limit, a restarted thread,
  the degraded timer). ROOT_OFFLINE / ROOT_ONLINE(path=root, reason) as above.
- Never: directories as files, hidden files (names starting with "."; rsync's `.name.XXXXXX` and GNOME's
  `.goutputstream-*` temp files are invisible until renamed, which arrives as CREATED "moved in"), anything under
  an excluded directory or name, symlinks unless `follow_symlinks`, files below the top level of a non-recursive
  root. A move between two roots arrives as DELETED in one and CREATED ("moved in") in the other (each root has
  its own inotify instance; the inode is unchanged).

Threads and ordering: the sink is called from watcher threads - each root's emitter thread, and for root-level
changes (RESCAN, ROOT_*) also from the thread calling start/check_health/add_root. Calls for one root are
serialised under that root's lock, so per root the sink sees one total order; across roots there is no order.
The sink may block briefly (back-pressure); while it does, that root's reader stops after `backlog` events and
the kernel queue absorbs the rest. Events are never dropped silently: whenever some may be lost (overflow, a
restart, an outage) a RESCAN or ROOT_ONLINE follows once the new watches are in place; events of a retired
emitter (after ROOT_OFFLINE, a restart or stop()) are dropped because that reconcile covers them. stop() and
root transitions wait for a sink call in progress to return. Sink exceptions kill that root's emitter thread
(logged); check_health() restarts it and emits RESCAN.
"""

from __future__ import annotations

import errno
import fnmatch
import logging
import os
import re
import stat
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, cast

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
from watchdog.observers.inotify import InotifyEmitter, InotifyWatchGroup
from watchdog.observers.inotify_c import InotifyConstants, InotifyEvent, InotifyFD, Mask, WatchDescriptor
from watchdog.observers.inotify_move_event_grouper import (
    GroupedInotifyEvent,
    InotifyMoveEventGrouper,
    PathedInotifyEvent,
)
from watchdog.utils.dirsnapshot import DirectorySnapshot, DirectorySnapshotDiff
from watchdog.version import VERSION_INFO as WATCHDOG_VERSION

from dedupd.records import Change, ChangeKind

log = logging.getLogger(__name__)

if WATCHDOG_VERSION[:2] != (7, 1):  # the classes below override watchdog 7.1's private inotify internals
    raise ImportError(f"dedupd.service.watcher is written against watchdog 7.1, found {WATCHDOG_VERSION}")

#: Synology thumbnails, desktop thumbnail caches, per-user trash, Synology/QNAP recycle bins, git metadata.
DEFAULT_EXCLUDE: tuple[str, ...] = ("@eaDir", ".thumbnails", ".Trash-*", "#recycle", ".git")

#: Filesystem types (/proc/self/mountinfo) whose changes made by other hosts inotify never sees: polled on "auto".
NETWORK_FILESYSTEMS = frozenset(
    {"nfs", "nfs4", "cifs", "smb3", "smbfs", "fuse.sshfs", "fuse.rclone", "fuse.glusterfs", "ceph", "9p", "davfs"}
)

#: Events per root read from inotify but not yet taken by the sink; beyond it the kernel queue fills instead.
DEFAULT_BACKLOG = 4096
#: A poll that loses fewer files than this is never mistaken for an outage (a small root emptied by its user).
MASS_DELETION_MIN_FILES = 10

WATCHING, POLLING, DEGRADED, OFFLINE = "watching", "polling", "degraded", "offline"

_STOP_JOIN_S = 5.0
#: How long start() waits for the first snapshot of polled roots; a slower one is followed by a RESCAN instead.
_BASELINE_WAIT_S = 60.0


@dataclass(frozen=True, slots=True)
class RootSpec:
    """One watched directory and its policy (the daemon converts its configuration to this).

    `include`: file globs, empty = every file; a glob without "/" matches the file name, one with "/" the path
    relative to the root (fnmatch: `*` also matches "/"); matched case-insensitively (`*.jpg` takes IMG_1.JPG).
    Directories are never pruned by `include`. `exclude`: globs, matched exactly; without "/" against every path
    component (so "@eaDir" excludes such directories at any depth), with "/" against the relative path of each
    ancestor. An excluded directory gets no inotify watch and is never walked. `exclude` replaces the defaults:
    extend DEFAULT_EXCLUDE to keep them. `follow_symlinks=False` ignores symlinks below the root (files and
    directories: changes to their targets would go unseen anyway); the root path itself may be a symlink.
    """

    path: str
    recursive: bool = True
    polling: bool | Literal["auto"] = "auto"
    poll_interval_s: float = 60.0
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = DEFAULT_EXCLUDE
    follow_symlinks: bool = False

    def __post_init__(self) -> None:
        if not os.path.isabs(self.path):
            raise ValueError(f"root path must be absolute: {self.path!r}")
        if self.polling not in (True, False, "auto"):
            raise ValueError(f"polling must be true, false or 'auto', not {self.polling!r}")
        if not self.poll_interval_s > 0:
            raise ValueError(f"poll_interval_s must be positive, not {self.poll_interval_s!r}")
        object.__setattr__(self, "path", os.path.normpath(self.path))
        object.__setattr__(self, "include", tuple(self.include))
        object.__setattr__(self, "exclude", tuple(self.exclude))

    @classmethod
    def of(cls, root: object) -> RootSpec:
        """A RootSpec from any object with these attributes (missing ones take the defaults)."""
        if isinstance(root, RootSpec):
            return root
        return cls(**{name: getattr(root, name) for name in cls.__dataclass_fields__ if hasattr(root, name)})


# ---------------------------------------------------------------------------------------------------------------
# Path policy and tree walk (shared by the watches, the events, the polling snapshot and scan())


def _compile(patterns: Sequence[str], flags: int = 0) -> re.Pattern[str] | None:
    return re.compile("|".join(fnmatch.translate(p) for p in patterns), flags) if patterns else None


def _split(patterns: Sequence[str]) -> tuple[list[str], list[str]]:
    """Name globs (no "/") and relative-path globs (leading/trailing "/" dropped)."""
    names = [p for p in patterns if "/" not in p.strip("/")]
    paths = [p.strip("/") for p in patterns if "/" in p.strip("/")]
    return names, paths


class _PathPolicy:
    """Which paths under one root dedupd looks at; `root` is the prefix the paths it is asked about carry."""

    def __init__(self, spec: RootSpec, root: str | None = None) -> None:
        self.root = root if root is not None else spec.path
        self._prefix = self.root if self.root.endswith("/") else self.root + "/"
        self.recursive = spec.recursive
        self.follow_symlinks = spec.follow_symlinks
        exclude_names, exclude_paths = _split(spec.exclude)
        self._exclude_name = _compile(exclude_names)
        self._exclude_path = _compile(exclude_paths)
        include_names, include_paths = _split(spec.include)
        self._include = bool(spec.include)
        self._include_name = _compile(include_names, re.IGNORECASE)
        self._include_path = _compile(include_paths, re.IGNORECASE)

    def relative(self, path: str) -> str | None:
        """`path` relative to the root, None unless strictly below it."""
        return path[len(self._prefix) :] if path.startswith(self._prefix) and len(path) > len(self._prefix) else None

    def _excluded(self, relative: str) -> bool:
        parts = relative.split("/")
        by_name, by_path = self._exclude_name, self._exclude_path
        if by_name is not None and any(by_name.match(part) for part in parts):
            return True
        return by_path is not None and any(by_path.match("/".join(parts[:n])) for n in range(1, len(parts) + 1))

    def keeps_dir(self, path: str) -> bool:
        """A directory strictly below the root whose files belong to it."""
        relative = self.relative(path)
        return relative is not None and self.recursive and not self._excluded(relative)

    def keeps_file(self, path: str) -> bool:
        relative = self.relative(path)
        if relative is None or ("/" in relative and not self.recursive):
            return False
        name = relative.rsplit("/", 1)[-1]
        if name.startswith(".") or self._excluded(relative):
            return False
        if not self._include:
            return True
        return bool(self._include_name and self._include_name.match(name)) or bool(
            self._include_path and self._include_path.match(relative)
        )

    def keeps_node(self, path: str, *, is_link: bool, is_dir: Callable[[], bool]) -> bool:
        """The one rule for a path on disk, whoever met it (the walk, a polling snapshot, a watch, a live
        event): a symlink only when `follow_symlinks`, then `keeps_dir` or `keeps_file`. `is_dir` is asked
        only for an entry that passes the symlink rule."""
        if is_link and not self.follow_symlinks:
            return False
        return self.keeps_dir(path) if is_dir() else self.keeps_file(path)

    def keeps_entry(self, entry: os.DirEntry[str]) -> bool:
        """A directory entry worth walking or reporting (`keeps_node` on what the listing says)."""
        return self.keeps_node(entry.path, is_link=entry.is_symlink(),
                               is_dir=lambda: _is_dir(entry, self.follow_symlinks))

    def keeps_live_file(self, path: str) -> bool:
        """A file named by a live event that still exists: `keeps_node` on what `lstat` says now, so a
        symlink made while the daemon runs is ignored exactly as the scan ignores it."""
        return self.keeps_node(path, is_link=os.path.islink(path), is_dir=lambda: False)


def _walk(
    top: str, policy: _PathPolicy, on_error: Callable[[str, OSError], None]
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
            if policy.follow_symlinks:
                st = os.stat(directory)
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
            with os.scandir(directory) as listing:
                entries = [entry for entry in listing if policy.keeps_entry(entry)]
        except OSError as exc:
            if directory == top:
                raise
            on_error(directory, exc)
            continue
        yield directory, entries
        stack.extend(e.path for e in entries if _is_dir(e, policy.follow_symlinks))  # kept dirs: recursive roots


def _is_dir(entry: os.DirEntry[str], follow_symlinks: bool) -> bool:
    try:
        return entry.is_dir(follow_symlinks=follow_symlinks)
    except OSError:
        return False


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
    policy = _PathPolicy(spec)
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

    for _directory, entries in _walk(top, policy, note):
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


def _filesystem_type(path: str, mountinfo: str | None = None) -> str:
    """Type of the filesystem holding `path` (longest mount point prefix in /proc/self/mountinfo), "" if unknown."""
    if mountinfo is None:
        try:
            with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as file:
                mountinfo = file.read()
        except OSError:
            return ""
    best, fstype = -1, ""
    for line in mountinfo.splitlines():
        fields, _, tail = line.partition(" - ")
        parts = fields.split()
        if len(parts) < 5 or not tail:
            continue
        mount_point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), parts[4])
        inside = path == mount_point or path.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) > best:
            best, fstype = len(mount_point), tail.split()[0]
    return fstype


def _read_int(path: str) -> int | None:
    try:
        with open(path, encoding="ascii") as file:
            return int(file.read())
    except (OSError, ValueError):
        return None


def _watch_limit_detail(missing: int, wanted: int, interval_s: float) -> str:
    """Names the sysctl that binds (the per-user-namespace one when it is the lower) and how far to raise it."""
    limits = {
        name: value
        for name, value in (
            ("fs.inotify.max_user_watches", _read_int("/proc/sys/fs/inotify/max_user_watches")),
            ("user.max_inotify_watches", _read_int("/proc/sys/user/max_inotify_watches")),
        )
        if value is not None
    }
    name, limit = min(limits.items(), key=lambda item: item[1]) if limits else ("fs.inotify.max_user_watches", 0)
    return (
        f"inotify watch limit reached: {missing} of {wanted} directories have no watch, so the root is rescanned "
        f"every {interval_s:g} s; raise {name} (now {limit}) to at least {limit + missing}, "
        f"e.g. sysctl -w {name}={max(limit + missing, 2 * limit)}"
    )


# ---------------------------------------------------------------------------------------------------------------
# Events -> Changes


_FILE_KINDS = {
    "created": ChangeKind.CREATED,
    "modified": ChangeKind.MODIFIED,
    "attrib": ChangeKind.MODIFIED,  # cp -p / rsync set the mtime after the close: the pipeline must re-check
    "closed": ChangeKind.CLOSED,
    "deleted": ChangeKind.DELETED,
}
_MOVED_IN = "moved in"


def _changes(event: FileSystemEvent, policy: _PathPolicy, watched_root: str) -> list[Change]:
    """The Changes one watchdog event means for a root ("" paths are outside every watch)."""
    root = policy.root

    def reported(path: bytes | str) -> str:
        text = os.fsdecode(path)
        inside = text == watched_root or text.startswith(watched_root + "/")
        return root + text[len(watched_root) :] if inside and watched_root != root else text

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


class _Outlet:
    """Where one emitter sends its events: converted for its root, and delivered only while it is current."""

    def __init__(self, root: _Root, epoch: int, watched_root: str) -> None:
        self._root = root
        self._epoch = epoch
        self.watched_root = watched_root

    def event(self, event: FileSystemEvent) -> None:
        for change in _changes(event, self._root.policy, self.watched_root):
            self._root.deliver(change, self._epoch)

    def lost(self, reason: str) -> None:
        path = self._root.spec.path
        self._root.deliver(Change(ChangeKind.RESCAN, path, path, reason=reason), self._epoch)

    def gone(self, reason: str) -> None:
        self._root.went_offline(reason, self._epoch)

    def ready(self) -> None:
        self._root.baseline_taken(self._epoch)


def _run_logged(body: Callable[[], None], what: str) -> None:
    """Runs a watcher thread's loop; an exception ends the thread with a log line (check_health() restarts it)."""
    try:
        body()
    except Exception:
        log.exception("%s died; check_health() will restart it and rescan", what)


# ---------------------------------------------------------------------------------------------------------------
# inotify: watchdog's classes with excludes before watches, overflow and watch-limit reporting, a bounded backlog


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
_OVERFLOW = InotifyEvent(WatchDescriptor(-1), InotifyConstants.IN_Q_OVERFLOW, 0, b"")


class _Backlog(InotifyMoveEventGrouper):
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


@dataclass(eq=False)
class _WatchGroup(InotifyWatchGroup):
    """The watches of one root, added only where the policy keeps a directory."""

    policy: _PathPolicy | None = None
    backlog: int = DEFAULT_BACKLOG
    #: Directories that got no watch because the watch limit was reached (appended by the reader thread).
    watch_limit_hits: set[str] = field(default_factory=set, init=False)

    def __post_init__(self) -> None:
        self._backlog = _Backlog(self.backlog)
        self._move_event_grouper = self._backlog
        super().__post_init__()  # adds the watches

    @property
    def watch_count(self) -> int:
        return len(self._active_callbacks_by_watch)

    def _add_all_callbacks(self, path: bytes) -> None:
        policy = cast(_PathPolicy, self.policy)
        top = os.fsdecode(path)
        if path != self.path and not policy.keeps_node(top, is_link=os.path.islink(top), is_dir=lambda: True):
            return
        try:
            for directory, _entries in _walk(top, policy, on_error=lambda _d, _e: None):
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
            self._backlog.put_event(PathedInotifyEvent(_OVERFLOW, self.path))

    def forget(self, directory: str) -> None:
        """Drop the watches of a tree that left the root (watchdog keeps watching it under its old path)."""
        top = os.fsencode(directory)
        below = top + b"/"
        with self._lock:
            if self.is_active:
                paths = self._active_callbacks_by_path.items()
                self._remove_callbacks([wd for p, wd in paths if p == top or p.startswith(below)])


class _InotifyReader(InotifyFD):
    """watchdog's inotify instance and reader thread; one per root, so an overflow concerns exactly one root."""

    def __init__(self) -> None:
        super().__init__()
        # watchdog's inotify_init() fd is inheritable: a forked worker would keep the root's watches alive.
        os.set_inheritable(self._inotify_fd, False)

    def run(self) -> None:
        _run_logged(super().run, "inotify reader thread")


class _InotifyEmitter(InotifyEmitter):
    """Turns one root's inotify events into Changes on its own thread (the thread that calls the sink)."""

    def __init__(
        self, watch: ObservedWatch, *, reader: _InotifyReader, outlet: _Outlet, policy: _PathPolicy, backlog: int
    ) -> None:
        super().__init__(EventQueue(), watch, inotify_fd=reader)  # the queue is unused: events go to the outlet
        self._outlet = outlet
        self._policy = policy
        self._backlog_limit = backlog
        self._root_bytes = os.fsencode(watch.path)
        self.group: _WatchGroup | None = None
        self.name = f"dedupd-inotify {watch.path}"

    def get_event_mask_from_filter(self) -> Mask:
        return _EVENT_MASK

    def on_thread_start(self) -> None:
        # Runs in the starting thread: the watches exist when start() returns.
        self.group = _WatchGroup(
            self._inotify_fd,
            self._root_bytes,
            event_mask=_EVENT_MASK,
            is_recursive=self.watch.is_recursive,
            follow_symlink=self.watch.follow_symlink,
            policy=self._policy,
            backlog=self._backlog_limit,
        )
        self._inotify = self.group

    def run(self) -> None:
        _run_logged(super().run, f"inotify emitter thread of {self.watch.path}")

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


# ---------------------------------------------------------------------------------------------------------------
# Polling


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


class _PollingEmitter(EventEmitter):
    """Stat snapshot of the root every poll_interval_s (excluded trees never walked), diffed into events."""

    def __init__(self, spec: RootSpec, policy: _PathPolicy, outlet: _Outlet, mass_deletion_guard: float) -> None:
        super().__init__(EventQueue(), ObservedWatch(spec.path, recursive=spec.recursive), timeout=spec.poll_interval_s)
        self._guard = mass_deletion_guard
        self._policy = policy
        self._outlet = outlet
        self._reference: DirectorySnapshot | None = None
        self._seen: set[tuple[int, int]] = set()
        self.name = f"dedupd-poll {spec.path}"

    def run(self) -> None:
        _run_logged(self._poll, f"polling thread of {self.watch.path}")

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
        path = cast(str, directory)
        if self._policy.follow_symlinks:  # DirectorySnapshot has no loop protection of its own
            st = os.stat(path)
            if (st.st_dev, st.st_ino) in self._seen:
                return iter(())
            self._seen.add((st.st_dev, st.st_ino))
        with os.scandir(path) as listing:
            return iter([entry for entry in listing if self._policy.keeps_entry(entry)])


# ---------------------------------------------------------------------------------------------------------------
# Roots


@dataclass(frozen=True, slots=True)
class _Probe:
    """What a root looked like when asked: reachable, which directory it is, whether it has any entry."""

    ok: bool
    reason: str = ""
    identity: tuple[int, int] | None = None
    has_entries: bool = False

    @classmethod
    def now(cls, path: str) -> _Probe:
        try:
            st = os.stat(path)
            if not stat.S_ISDIR(st.st_mode):
                return cls(False, "the root is not a directory any more")
            with os.scandir(path) as listing:
                has_entries = next(listing, None) is not None
        except OSError as exc:
            return cls(False, f"cannot read the root: {exc.strerror}")
        return cls(True, identity=(st.st_dev, st.st_ino), has_entries=has_entries)


class _Prober:
    """Probes a root on a helper thread, so a hung network mount cannot hang the caller; one probe at a time."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._thread: threading.Thread | None = None
        self._result = _Probe(False, "not probed yet")
        self._since = 0.0

    def begin(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return  # still stuck in the kernel: result() says so
        self._since = time.monotonic()
        self._thread = threading.Thread(target=self._run, name=f"dedupd-probe {self._path}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self._result = _Probe.now(self._path)

    def result(self, deadline: float) -> _Probe:
        assert self._thread is not None
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            return _Probe(False, f"the root has not answered for {time.monotonic() - self._since:.0f} s")
        return self._result


@dataclass(frozen=True, slots=True)
class _Machine:
    """The running parts of one root: its threads (emitter first) and, for inotify, its watch group."""

    threads: tuple[EventEmitter | InotifyFD, ...] = ()
    group: _WatchGroup | None = None

    def alive(self) -> bool:
        return all(thread.is_alive() for thread in self.threads)

    def stop(self) -> None:
        for thread in self.threads:
            thread.stop()
        for thread in self.threads:
            if thread.ident is not None and thread is not threading.current_thread():
                thread.join(_STOP_JOIN_S)


class _Root:
    """One root's state machine: watching|polling|degraded|offline, its running parts, and delivery to the sink.

    Every transition bumps `_epoch` under `_lock`; an emitter delivers only while its epoch is current, so a
    retired emitter can never report after the Change that retired it.
    """

    def __init__(self, spec: RootSpec, sink: Callable[[Change], None], backlog: int, guard: float) -> None:
        self.spec = spec
        self.policy = _PathPolicy(spec)
        self.prober = _Prober(spec.path)
        self._sink = sink
        self._backlog = backlog
        self._guard = guard
        self._lock = threading.Lock()
        self._epoch = 0
        self._begun = False  # start() made its first transition: check() may act from now on
        self._stopped = False
        self._machine: _Machine | None = None
        self._polled = False
        self._identity: tuple[int, int] | None = None
        self._offline_since = time.monotonic()
        self._next_rescan = float("inf")
        self._failed = False
        self._ready = threading.Event()  # set once changes after it are sure to be reported (or the root is offline)
        self._owed: tuple[ChangeKind, str] | None = None  # what to emit when a polled root's first snapshot exists
        self._last: Change | None = None
        self.state = OFFLINE
        self.detail = "not started"

    # -- delivery (any thread)

    def _emit(self, change: Change) -> None:
        """Hands a change to the sink; the caller holds `_lock`."""
        if change.kind is ChangeKind.MODIFIED and change == self._last:
            return
        self._last = change
        self._sink(change)

    def _emit_root(self, kind: ChangeKind, reason: str) -> None:
        self._emit(Change(kind, self.spec.path, self.spec.path, reason=reason))

    def deliver(self, change: Change, epoch: int) -> None:
        with self._lock:
            if epoch == self._epoch:
                self._emit(change)

    def went_offline(self, reason: str, epoch: int) -> None:
        """Called by an emitter that saw the root go; its parts are stopped by the next check()."""
        with self._lock:
            if epoch == self._epoch:
                self._mark_offline(reason)

    def baseline_taken(self, epoch: int) -> None:
        """Called by a polling emitter once its first snapshot exists: only now is a reconcile meaningful."""
        with self._lock:
            if epoch == self._epoch:
                self._ready.set()
                owed, self._owed = self._owed, None
                if owed is not None:
                    self._emit_root(*owed)

    def _mark_offline(self, reason: str) -> None:
        self._epoch += 1
        self._begun = True
        self._ready.set()
        self.state, self.detail = OFFLINE, reason
        self._offline_since = time.monotonic()
        log.warning("root %s is offline (its records are kept): %s", self.spec.path, reason)
        self._emit_root(ChangeKind.ROOT_OFFLINE, reason)

    # -- lifecycle (caller threads)

    def status(self) -> dict[str, object]:
        machine = self._machine
        watches = machine.group.watch_count if machine is not None and machine.group is not None else 0
        return {
            "path": self.spec.path,
            "state": self.state,
            "recursive": self.spec.recursive,
            "watches": watches,
            "detail": self.detail,
        }

    def start(self, probe: _Probe) -> bool:
        if probe.ok:
            return self._launch(probe, None, "")
        with self._lock:
            if not self._stopped:
                self._mark_offline(probe.reason)
        return True

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            self._epoch += 1
            self._ready.set()
            machine, self._machine = self._machine, None
        if machine is not None:
            machine.stop()

    def wait_ready(self, timeout: float) -> None:
        """Waits for a polled root's first snapshot; when it takes longer, a RESCAN follows that snapshot."""
        if self._ready.wait(timeout):
            return
        with self._lock:
            if not self._ready.is_set() and self._owed is None:
                self._owed = (ChangeKind.RESCAN, "the first poll took longer than start() waited for it")

    def _retire(self, epoch: int) -> bool:
        """Stops the running parts unless another transition came first (then False)."""
        with self._lock:
            if epoch != self._epoch or self._stopped:
                return False
            self._epoch += 1
            machine, self._machine = self._machine, None
        if machine is not None:
            machine.stop()
        return True

    def _launch(self, probe: _Probe, then: ChangeKind | None, reason: str) -> bool:
        """Starts watching or polling; then emits `then` (RESCAN, ROOT_ONLINE) once the watches or the first
        snapshot exist, so that a reconcile it triggers misses nothing."""
        with self._lock:
            if self._stopped:
                return True
            self._epoch += 1
            self._begun = True
            self._ready = threading.Event()
            self._identity = probe.identity
            try:
                self._machine, self.state, self.detail = self._build(_Outlet(self, self._epoch, self._watched_path()))
                self._failed = False
            except Exception as exc:
                log.exception(
                    "cannot watch %s; rescanning it every %g s instead", self.spec.path, self.spec.poll_interval_s
                )
                self._machine, self.state, self._failed = None, DEGRADED, True
                self.detail = f"cannot watch the root ({exc}); rescanned every {self.spec.poll_interval_s:g} s"
            degraded = self.state == DEGRADED
            self._next_rescan = time.monotonic() + self.spec.poll_interval_s if degraded else float("inf")
            if degraded:
                log.warning("root %s is degraded: %s", self.spec.path, self.detail)
            signal = (then, reason) if then is not None else (ChangeKind.RESCAN, self.detail) if degraded else None
            if self.state == POLLING:
                self._owed = signal
            else:
                self._ready.set()
                if signal is not None:
                    self._emit_root(*signal)
            return not self._failed

    def _watched_path(self) -> str:
        return os.path.realpath(self.spec.path)

    def _build(self, outlet: _Outlet) -> tuple[_Machine, str, str]:
        """The running parts for the root, its state and detail. Raises on anything but inotify's limits."""
        spec = self.spec
        fstype = _filesystem_type(outlet.watched_root)
        self._polled = spec.polling is True or (spec.polling == "auto" and fstype in NETWORK_FILESYSTEMS)
        if self._polled:
            poller = _PollingEmitter(spec, self.policy, outlet, self._guard)
            poller.start()
            why = f" ({fstype}: inotify misses other hosts' changes)" if spec.polling == "auto" else ""
            return _Machine((poller,)), POLLING, f"polled every {spec.poll_interval_s:g} s{why}"
        try:
            reader = _InotifyReader()
        except OSError as exc:
            if exc.errno != errno.EMFILE:
                raise
            limit = _read_int("/proc/sys/fs/inotify/max_user_instances")
            return (
                _Machine(),
                DEGRADED,
                (
                    f"inotify instance limit reached: raise fs.inotify.max_user_instances (now {limit}); "
                    f"rescanned every {spec.poll_interval_s:g} s meanwhile"
                ),
            )
        reader.start()
        watch = ObservedWatch(outlet.watched_root, recursive=spec.recursive, follow_symlink=spec.follow_symlinks)
        emitter = _InotifyEmitter(
            watch, reader=reader, outlet=outlet, policy=_PathPolicy(spec, outlet.watched_root), backlog=self._backlog
        )
        try:
            emitter.start()  # adds the watches
        except OSError as exc:
            reader.stop()
            if exc.errno != errno.ENOSPC:
                raise
            wanted = sum(1 for _ in _walk(spec.path, self.policy, lambda _d, _e: None))
            return _Machine(), DEGRADED, _watch_limit_detail(wanted, wanted, spec.poll_interval_s)
        group = cast(_WatchGroup, emitter.group)
        machine = _Machine((emitter, reader), group)
        if group.watch_limit_hits:
            missing = len(group.watch_limit_hits)
            return machine, DEGRADED, _watch_limit_detail(missing, missing + group.watch_count, spec.poll_interval_s)
        return machine, WATCHING, ""

    def check(self, probe: _Probe, now: float) -> bool:
        """One health-check step; False while the root cannot be watched or polled for an unexpected reason."""
        with self._lock:
            if self._stopped or not self._begun:
                return True
            epoch, state, machine = self._epoch, self.state, self._machine
        if state == OFFLINE:
            # Stops what an emitter that saw the root go left running (and does nothing else when offline).
            if self._retire(epoch) and probe.ok and self._may_return(probe, now):
                return self._launch(probe, ChangeKind.ROOT_ONLINE, "the root is available again")
            return True
        if not probe.ok or probe.identity != self._identity:
            reason = probe.reason or "the root path now leads to another directory (unmounted or replaced)"
            with self._lock:
                if epoch != self._epoch:
                    return True
                self._mark_offline(reason)
                machine, self._machine = self._machine, None
            if machine is not None:
                machine.stop()
            return True
        if machine is not None and not machine.alive():
            return not self._retire(epoch) or self._launch(probe, ChangeKind.RESCAN, "a watcher thread died; restarted")
        group = machine.group if machine is not None else None
        if state == WATCHING and group is not None and group.watch_limit_hits:
            missing = len(group.watch_limit_hits)
            detail = _watch_limit_detail(missing, missing + group.watch_count, self.spec.poll_interval_s)
            with self._lock:
                if epoch == self._epoch:
                    self.state, self.detail = DEGRADED, detail
                    self._next_rescan = now + self.spec.poll_interval_s
                    log.warning("root %s is degraded: %s", self.spec.path, detail)
                    self._emit_root(ChangeKind.RESCAN, detail)
            return True
        if state == DEGRADED and now >= self._next_rescan:
            # Rebuild from scratch: the watches fit again once the limit was raised; otherwise rescan once more.
            return not self._retire(epoch) or self._launch(probe, ChangeKind.RESCAN, self.detail)
        return not self._failed

    def _may_return(self, probe: _Probe, now: float) -> bool:
        if self._identity is not None and probe.identity != self._identity and not probe.has_entries:
            return False  # an empty directory where the root we knew was: an unmounted mount point
        # A polled root that lost its files at once comes back no sooner than one poll later (a CIFS glitch ends).
        return not self._polled or now - self._offline_since >= self.spec.poll_interval_s


class Watcher:
    """Watches roots and turns what happens under them into Changes for `sink` (see the module docstring).

    `backlog`: events per root held in memory before the inotify reader waits for the sink.
    `probe_timeout_s`: how long check_health() waits for a root to answer before calling it offline.
    `mass_deletion_guard`: the share of a polled root's files that, lost in one poll, means an outage.
    """

    def __init__(
        self,
        roots: Sequence[RootSpec | object],
        sink: Callable[[Change], None],
        *,
        backlog: int = DEFAULT_BACKLOG,
        probe_timeout_s: float = 2.0,
        mass_deletion_guard: float = 0.5,
    ) -> None:
        self._sink = sink
        self._backlog = backlog
        self._guard = mass_deletion_guard
        self._probe_timeout_s = probe_timeout_s
        self._lock = threading.Lock()
        self._health_lock = threading.Lock()
        self._started = False
        self._roots: dict[str, _Root] = {}
        for root in roots:
            spec = RootSpec.of(root)
            self._roots[spec.path] = _Root(spec, sink, backlog, mass_deletion_guard)

    def start(self) -> None:
        """Adds the watches (or takes the first snapshot of polled roots) for every root, so that every change
        after it returns is reported; ROOT_OFFLINE for roots not there."""
        with self._lock:
            if self._started:
                return
            self._started = True
            roots = list(self._roots.values())
        self._start(roots)

    def _start(self, roots: list[_Root]) -> None:
        for root in roots:
            root.prober.begin()
        deadline = time.monotonic() + self._probe_timeout_s
        for root in roots:
            root.start(root.prober.result(deadline))
        deadline = time.monotonic() + _BASELINE_WAIT_S
        for root in roots:
            root.wait_ready(max(0.0, deadline - time.monotonic()))

    def stop(self) -> None:
        """Stops every root; no sink call starts after this returns."""
        with self._lock:
            self._started = False
            roots = list(self._roots.values())
        for root in roots:
            root.stop()

    def add_root(self, spec: RootSpec | object) -> None:
        """Watches one more root (replacing a root with the same path but another policy); started at once
        when the watcher runs. The caller schedules the reconcile scan of a new root."""
        new_spec = RootSpec.of(spec)
        with self._lock:
            old = self._roots.get(new_spec.path)
            if old is not None and old.spec == new_spec:
                return
            root = self._roots[new_spec.path] = _Root(new_spec, self._sink, self._backlog, self._guard)
            started = self._started
        if old is not None:
            old.stop()
        if started:
            self._start([root])

    def remove_root(self, path: str) -> None:
        """Stops watching a root (KeyError if it is not one); emits nothing."""
        with self._lock:
            root = self._roots.pop(os.path.normpath(path))
        root.stop()

    def roots_status(self) -> list[dict[str, object]]:
        """Per root, sorted by path: {"path", "state": watching|polling|degraded|offline, "recursive",
        "watches": inotify watches held, "detail": why it is degraded/offline/polled, else ""}."""
        with self._lock:
            roots = sorted(self._roots.values(), key=lambda root: root.spec.path)
        return [root.status() for root in roots]

    def check_health(self) -> bool:
        """Restarts dead watcher threads (RESCAN), takes vanished roots offline and returned ones online, rescans
        degraded roots every poll_interval_s. False while a root could not be (re)started for an unexpected
        reason; degraded and offline roots are healthy. Call it every few seconds."""
        with self._health_lock:
            with self._lock:
                if not self._started:
                    return True
                roots = list(self._roots.values())
            for root in roots:
                root.prober.begin()
            deadline = time.monotonic() + self._probe_timeout_s
            healthy = True
            for root in roots:
                healthy = root.check(root.prober.result(deadline), time.monotonic()) and healthy
            return healthy
