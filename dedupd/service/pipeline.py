"""The daemon's data path: settle -> encode pool -> CNN batch queue -> commit -> index -> reports.

Owns what happens between a watcher event and a committed, reported record:

* settling: a file is encoded after a close-after-write, a move-in, or `settle_ms` of unchanged
  (size, mtime_ns); repeated events for one file collapse into one entry, so they cause one decode;
* unchanged files (dev, inode, size, mtime_ns equal to the store's) are never decoded again, broken
  ones included (their skip reason is stored with their key);
* byte copies are read, not decoded: a new file of the size of a stored record is submitted with that
  record's digest, and when its bytes have it the record's encoding is reused under the new path (an exact
  duplicate, reported like any other). A file of the size of one still in flight that was submitted without
  a digest (the first of its size) waits until that one is committed, so a copy within one burst is read, not
  decoded, too (as `dedupd scan` does);
* moves and directory renames re-key records without decoding, also when they happened while the
  daemon was down (same inode, size and mtime under a vanished path);
* the reconcile scan (startup, `rescan`, lost events) compares the disk with the store;
* the CNN batch queue (`batch_size`, `max_wait_ms`) in one thread on one ONNX Runtime session;
* one committer thread, the only writer: a batch is one store transaction (durable), then the index
  (visible), then one report per file that arrived with duplicates.

Every queue is bounded: a flood of events blocks the producers (back-pressure) instead of growing.
A result is committed only if the file still has the key it was encoded with; otherwise it is settled
again, so a file rewritten during its decode is stored with its final content.
"""

import logging
import os
import queue
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from dedupd.batches import gather
from dedupd.catalog import Applied, Catalog
from dedupd.companions import companion_kind
from dedupd.encodepool import EncodePool, Outcome, SameContent
from dedupd.errors import QUIET_REASONS, Skipped, SkipReason, StoreError
from dedupd.imaging.cnn import Encoder
from dedupd.imaging.encode import DEFAULT_MAX_FILE_SIZE, EncodedFile
from dedupd.pathnames import is_under
from dedupd.records import Change, ChangeKind, Encoding, FileKey, FileRecord, Match, Move, Removal, Restat, thumb_pixels
from dedupd.service.reports import ReportWriter

log = logging.getLogger(__name__)


#: Idle also means no watcher event for this long: watchdog holds events up to 0.5 s to pair moves, and an
#: inotify overflow is only seen when its reader gets to it.
EVENT_QUIET_S = 1.5
#: How long `expect` remembers a file an undo is bringing back.
EXPECT_TTL_S = 600.0

type Scanner = Callable[[str], Iterator[tuple[str, os.stat_result]]]


@dataclass(frozen=True, slots=True)
class OwnFiles:
    """What the daemon writes itself (state dir, reports, the socket's lock file, its log file): a root that holds
    them, directly or through a symlink, must not index them, or each commit would change a file and cause the
    next decode."""

    trees: tuple[str, ...] = ()  # real paths: each one and everything below it
    files: frozenset[tuple[int, int]] = frozenset()  # (dev, inode) of single files, e.g. a redirected stderr

    @classmethod
    def of(cls, trees: Iterable[str | os.PathLike[str]], fds: tuple[int, ...] = (1, 2)) -> "OwnFiles":
        """`trees` plus the regular files this process writes its output to (`fds`)."""
        files = set()
        for fd in fds:
            try:
                st = os.fstat(fd)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                files.add((st.st_dev, st.st_ino))
        return cls(tuple(os.path.realpath(t) for t in trees), frozenset(files))

    def holds(self, path: str, st: os.stat_result) -> bool:
        if (st.st_dev, st.st_ino) in self.files:
            return True
        if not self.trees:
            return False
        real = os.path.realpath(path)
        return any(is_under(real, t) for t in self.trees)


@dataclass(frozen=True, slots=True)
class PipelineSettings:
    settle_ms: int = 2000
    polled_settle_ms: int = 5000  # polling sees a file between two snapshots: give writers more time
    cnn_batch_size: int = 16
    cnn_max_wait_ms: int = 50
    commit_batch: int = 256
    commit_wait_ms: int = 100
    max_queued_changes: int = 10_000
    min_file_size: int = 0
    max_file_size: int = DEFAULT_MAX_FILE_SIZE
    mass_deletion_guard: float = 0.5
    #: The daemon's own files, never indexed whatever the roots say (see `OwnFiles`).
    own: OwnFiles | None = None


def file_key(path: str, st: os.stat_result) -> FileKey:
    return FileKey(path=path, dev=st.st_dev, inode=st.st_ino, size=st.st_size, mtime_ns=st.st_mtime_ns)


def same_file_state(a: FileKey, b: FileKey) -> bool:
    """Unchanged on disk: the reconcile and settle rule (path aside)."""
    return (a.dev, a.inode, a.size, a.mtime_ns) == (b.dev, b.inode, b.size, b.mtime_ns)


@dataclass(slots=True)
class _Settling:
    """A path waiting for its content to stop changing."""

    key: FileKey
    stable_since: float
    immediate: bool


@dataclass(slots=True)
class Counters:
    decodes: int = 0
    committed: int = 0  # files done with: their record written, or dropped as changed/vanished (scan progress)
    vanished: int = 0  # files gone before they could be encoded (no record is kept for them)
    skipped_by_extension: dict[str, int] = field(default_factory=dict)
    reports: int = 0
    moves: int = 0
    removals: int = 0
    reencoded_after_change: int = 0
    reports_lost: int = 0  # reports that could not be written (a full disk)
    same_content: int = 0  # files read again whose bytes had not changed (no decode, no report)
    reused: int = 0  # new files with the bytes of a stored record: read, its encoding reused (no decode)


class Pipeline:
    """Turns watcher Changes into committed, indexed, reported records. Thread-safe entry points."""

    def __init__(
        self,
        catalog: Catalog,
        pool_factory: Callable[[Callable[[FileKey, Outcome], None]], EncodePool],
        encoder: Encoder | None,
        reports: ReportWriter | None,
        settings: PipelineSettings,
        *,
        root_of: Callable[[str], str | None],
        scanner: Scanner,
        on_batch: Callable[[list[str], dict[str, list[Match]], dict[str, Path]], None] | None = None,
        is_polled: Callable[[str], bool] = lambda path: False,
        before_commit: Callable[[list[str]], object] | None = None,
    ) -> None:
        """`before_commit`, if given, is called in the commit stage with the paths of each batch's records before
        they are committed (a test wedges the stage there, to see the watchdog pings stop)."""
        self._catalog = catalog
        self._encoder = encoder
        self._reports = reports
        self._settings = settings
        self._root_of = root_of
        self._scanner = scanner
        self._on_batch = on_batch
        self._is_polled = is_polled
        self._before_commit = before_commit
        self._changes: queue.Queue[Change | None] = queue.Queue(settings.max_queued_changes)
        self._cnn_queue: queue.Queue[tuple[FileKey, EncodedFile] | None] = queue.Queue(4 * settings.cnn_batch_size)
        self._commit_queue: queue.Queue[Any] = queue.Queue(2 * settings.commit_batch)
        self._settling: dict[str, _Settling] = {}
        self._in_flight: dict[str, FileKey] = {}  # submitted to the pool, not yet committed
        self._dirty: set[str] = set()  # changed again while in flight: settle once more afterwards
        self._first_of_size: dict[int, str] = {}  # size -> the path in flight submitted without a digest
        self._submitting = 0  # settled files being checked and handed on (`_submit_settled`)
        self._offline: set[str] = set()
        self._last_change_at = 0.0
        self._recently_vanished: dict[str, None] = {}  # insertion-ordered, bounded: counts each path once
        self._expected: dict[str, tuple[float, FileRecord]] = {}  # path -> (deadline, record): see expect()
        self._state_lock = threading.Condition()
        self._scans: queue.Queue[str | None] = queue.Queue()
        self._scan_running = False
        self._scan_progress = (0, 0)
        self._paused = threading.Event()
        self._stopping = threading.Event()
        self._intake_closed = threading.Event()
        self._problems: dict[str, tuple[float, str]] = {}  # stage -> (failing since, why)
        self._threads: list[threading.Thread] = []
        self.counters = Counters()
        self.heartbeat: dict[str, float] = {}
        self._pool = pool_factory(self._on_encoded)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._pool.start()
        for name, target in (("settle", self._settle_loop), ("cnn", self._cnn_loop),
                             ("commit", self._commit_loop), ("scan", self._scan_loop)):
            thread = threading.Thread(target=self._guarded(name, target), name=f"dedupd-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _guarded(self, name: str, loop: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                loop()
            except Exception as exc:  # noqa: BLE001 - a dead stage must be visible, not silent
                log.exception("pipeline stage %s died", name)
                self._problems[name] = (time.monotonic(), f"died: {type(exc).__name__}: {exc}")
                self.heartbeat[name] = -1.0
        return run

    def close_intake(self) -> None:
        """Drop watcher events from now on (a stop is coming; the next start's scan covers them), so a
        watcher blocked on a full queue can stop."""
        self._intake_closed.set()

    def stop(self, drain: bool = True, timeout: float = 30.0) -> None:
        """Stop taking events; with `drain`, finish what was already decoded and commit it. Returns within
        about `timeout` whatever the stages do: a commit that keeps failing (a full disk) is given up, and
        a producer waiting on a full queue gives up its item (the next start's scan finds those files)."""
        deadline = time.monotonic() + timeout
        self.close_intake()
        if drain and "commit" not in self._problems:
            self.wait_idle(timeout * 2 / 3, settle_pending=False)
        self._stopping.set()
        for sentinel_queue in (self._changes, self._cnn_queue):
            try:
                sentinel_queue.put_nowait(None)
            except queue.Full:
                pass  # its stage sees _stopping within a second
        self._scans.put(None)
        self._pool.close()
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        stuck = [t.name for t in self._threads if t.is_alive()]
        if stuck:
            log.warning("pipeline stages still busy at stop: %s", ", ".join(stuck))

    def _put[T](self, target: "queue.Queue[T]", item: T) -> bool:
        """Put `item`, waiting while `target` is full (back-pressure), but never past a stop: False then."""
        while True:
            try:
                target.put(item, timeout=0.5)
                return True
            except queue.Full:
                if self._stopping.is_set():
                    return False

    def problems(self) -> dict[str, str]:
        """Stages that are failing or dead, and why (for status, STATUS= and the logs)."""
        return {stage: message for stage, (_, message) in list(self._problems.items())}

    def dead_stages(self) -> list[str]:
        """Stages whose thread died (a bug): the daemon stops, the service manager restarts it."""
        return sorted(name for name, beat in self.heartbeat.items() if beat < 0)

    def alive(self, stall_after_s: float = 120.0) -> bool:
        """Every stage thread runs, none crashed, each looped within `stall_after_s`, and the commit stage has
        not been failing for that long either (systemd watchdog input).

        Stages beat at least once a second when idle; only a stage stuck in one step (a wedged commit,
        a hung CNN call) falls silent, and then the service manager restarts the daemon.
        """
        now = time.monotonic()
        return all(t.is_alive() for t in self._threads) and all(
            0 <= beat and now - beat < stall_after_s for beat in self.heartbeat.values()
        ) and all(now - since < stall_after_s for stage, (since, _) in list(self._problems.items())
                  if stage != "reports")  # fmt: skip  # a report missed is no reason to restart

    # ------------------------------------------------------------------ inputs
    def on_change(self, change: Change) -> None:
        """Called from watcher threads; blocks while the queue is full (back-pressure), until a stop."""
        self._last_change_at = time.monotonic()
        while not self._intake_closed.is_set():
            try:
                self._changes.put(change, timeout=0.5)
                return
            except queue.Full:
                continue

    def rescan(self, path: str) -> None:
        """Reconcile `path` (a root or a directory in one) with the store, in the scan thread."""
        with self._state_lock:
            self._scan_running = True
        self._scans.put(path)

    def expect(self, records: list[FileRecord]) -> None:
        """Files that are coming back unchanged (an undo): when one settles with the record's size and mtime,
        the record is committed with the file's current key instead of decoding it again. Forgotten after
        EXPECT_TTL_S; a file that arrives changed is decoded as usual."""
        deadline = time.monotonic() + EXPECT_TTL_S
        with self._state_lock:
            now = time.monotonic()
            for path in [p for p, (until, _) in self._expected.items() if until < now]:
                del self._expected[path]
            for rec in records:
                self._expected[rec.key.path] = (deadline, rec)

    def _take_expected(self, key: FileKey) -> FileRecord | None:
        with self._state_lock:
            until, rec = self._expected.pop(key.path, (0.0, None))
        if rec is None or until < time.monotonic() or (rec.key.size, rec.key.mtime_ns) != (key.size, key.mtime_ns):
            return None
        return replace(rec, key=key)

    def encode_workers(self) -> int:
        """Encode worker processes running now (none while the pool is stopped for idleness)."""
        return self._pool.stats()["workers"]

    def encode_file(self, path: str) -> "Future[Outcome]":
        """Decode a file for a request (query, needles) in the pipeline's encode pool, ahead of its backlog."""
        return self._pool.encode(path)

    def set_root_offline(self, root: str, offline: bool) -> None:
        with self._state_lock:
            (self._offline.add if offline else self._offline.discard)(root)
        if not offline:
            self.rescan(root)

    def pause(self) -> None:
        self._paused.set()

    def resume(self) -> None:
        self._paused.clear()
        with self._state_lock:
            self._state_lock.notify_all()

    @property
    def paused(self) -> bool:
        return self._paused.is_set()

    # ------------------------------------------------------------------ state for status / wait-idle
    def pending(self) -> int:
        with self._state_lock:
            return self._pending_files() + self._scans.qsize() + (1 if self._scan_running else 0)

    def pending_files(self) -> int:
        """Files waiting to be encoded (settling, being checked, queued or in flight), without the scans still
        to walk."""
        with self._state_lock:
            return self._pending_files()

    def _pending_files(self) -> int:
        return len(self._settling) + self._submitting + len(self._in_flight) + self._changes.qsize()

    def scan_state(self) -> dict[str, Any]:
        done, total = self._scan_progress
        return {"running": self._scan_running, "done": done, "total": total}

    def wait_idle(self, timeout: float, *, settle_pending: bool = True) -> bool:
        """True once nothing is queued, settling, decoding, embedding, committing or scanning.

        With `settle_pending`, also not before EVENT_QUIET_S without watcher events counted from the call: a
        file written just before it may still be on its way (watchdog holds events up to 0.5 s).
        """
        started = time.monotonic()
        deadline = started + timeout
        with self._state_lock:
            while True:
                quiet = time.monotonic() - max(self._last_change_at, started) >= EVENT_QUIET_S
                busy = (self._changes.unfinished_tasks or self._in_flight or self._submitting or self._scan_running
                        or (settle_pending and (self._settling or not quiet)) or self._scans.unfinished_tasks
                        or self._commit_queue.unfinished_tasks)
                if not busy:
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._state_lock.wait(min(remaining, 0.1))

    # ------------------------------------------------------------------ settle stage
    def _settle_loop(self) -> None:
        tick = self._settings.settle_ms / 4000
        while not self._stopping.is_set():
            self.heartbeat["settle"] = time.monotonic()
            try:
                change = self._changes.get(timeout=min(tick, 0.25))
            except queue.Empty:
                change = None
            else:
                try:
                    if change is None:
                        return
                    self._handle(change)
                finally:
                    self._changes.task_done()
            if not self._paused.is_set():
                self._submit_settled()

    def _handle(self, change: Change) -> None:
        kind = change.kind
        if kind in (ChangeKind.CREATED, ChangeKind.MODIFIED):
            self._observe(change.path, immediate=change.reason == "moved in")  # a move-in is a finished file
        elif kind == ChangeKind.CLOSED:
            self._observe(change.path, immediate=True)
        elif kind == ChangeKind.MOVED and change.dest is not None:
            self._moved(change.path, change.dest)
        elif kind == ChangeKind.DIR_MOVED and change.dest is not None:
            self._dir_moved(change.path, change.dest)
        elif kind == ChangeKind.DELETED and os.path.isfile(change.path):
            # A file is back already: a late event of its move out (watchdog holds a move-from a moment for its
            # move-to; a trash and its undo): forgetting it now would drop its return. Observed again instead: an
            # unchanged file keeps its record, another file at the path replaces it (a directory there now is
            # no file: the record goes).
            self._observe(change.path, immediate=True)
        elif kind in (ChangeKind.DELETED, ChangeKind.DIR_DELETED):
            with self._state_lock:
                waiting = change.path in self._settling
            (self._vanished if waiting else self._forget)(change.path)
            self._put(self._commit_queue, Removal(change.path))
        elif kind == ChangeKind.RESCAN:
            log.warning("rescanning %s: %s", change.path, change.reason or "requested")
            self.rescan(change.path)
        elif kind == ChangeKind.ROOT_OFFLINE:
            log.warning("root %s is offline (%s); its records are kept", change.root, change.reason)
            self.set_root_offline(change.root, True)
        elif kind == ChangeKind.ROOT_ONLINE:
            log.info("root %s is back; reconciling", change.root)
            self.set_root_offline(change.root, False)

    def _observe(self, path: str, *, immediate: bool, known: os.stat_result | None = None) -> None:
        """Note the file's current state; it is submitted once that state has held long enough."""
        try:
            st = known or os.stat(path)
        except FileNotFoundError:
            self._vanished(path)
            return
        except OSError as exc:  # exists but cannot be stat'ed through (a symlink loop, EIO, EACCES)
            key = self._current_key(path)
            if key is not None:
                self._commit_skip(key, SkipReason.UNREADABLE, str(exc))
            return
        if not stat.S_ISREG(st.st_mode):
            return
        own = self._settings.own
        if own is not None and own.holds(path, st):
            if self._catalog.store.get(path) is not None:  # indexed by a daemon before this rule
                self._put(self._commit_queue, Removal(path))
            return
        key = file_key(path, st)
        with self._state_lock:
            if path in self._in_flight:
                if not same_file_state(self._in_flight[path], key):
                    self._dirty.add(path)
                return
            previous = self._settling.get(path)
            if previous is not None and same_file_state(previous.key, key):
                previous.immediate = previous.immediate or immediate
                return
            now = time.monotonic()
            self._settling[path] = _Settling(key, now, immediate)

    def _submit_settled(self) -> None:
        now = time.monotonic()
        settle_s = self._settings.settle_ms / 1000
        polled_s = max(self._settings.settle_ms, self._settings.polled_settle_ms) / 1000
        with self._state_lock:
            due = [(path, entry) for path, entry in self._settling.items()
                   if entry.immediate
                   or now - entry.stable_since >= (polled_s if self._is_polled(path) else settle_s)]
        for path, entry in due:
            try:
                st = os.stat(path)
            except FileNotFoundError:
                self._vanished(path)
                continue
            except OSError:
                continue
            key = file_key(path, st)
            if not same_file_state(key, entry.key):  # still changing: wait again from now
                with self._state_lock:
                    self._settling[path] = _Settling(key, time.monotonic(), False)
                continue
            with self._state_lock:  # off `_settling` and not yet in flight or queued: `_submitting` keeps it busy
                self._settling.pop(path, None)
                self._submitting += 1
            try:
                if self._unchanged_in_store(key):
                    continue
                if key.size < max(1, self._settings.min_file_size):
                    self._commit_skip(key, SkipReason.TOO_SMALL, f"{key.size} bytes")
                    continue
                if key.size > self._settings.max_file_size:  # never read: a worker would hold it all
                    self._commit_skip(key, SkipReason.TOO_LARGE, f"{key.size} bytes; max_file_size is "
                                      f"{self._settings.max_file_size}")
                    continue
                if self._moved_while_away(key):
                    continue
                companion = companion_kind(path)
                if companion is not None:  # a sidecar or a Live Photo's motion file: its image's, never decoded
                    self._commit_skip(key, companion, "belongs to the image of its basename")
                    continue
                known = self._take_expected(key)
                if known is not None:  # an undo brought it back as it was: committed without a decode
                    with self._state_lock:
                        self._in_flight[path] = key
                    self._put(self._commit_queue, known)
                    continue
                digest = self._known_digest(key) or self._copy_digest(key)
                with self._state_lock:
                    first = self._first_of_size.setdefault(key.size, path) if digest is None else path
                    if first == path:
                        self._in_flight[path] = key
                    else:  # may be a copy of that file: asked again once it is committed
                        self._settling[path] = _Settling(key, entry.stable_since, True)
                        continue
                self._pool.submit(key, path, digest)  # blocks while the pool is full: back-pressure
            finally:
                with self._state_lock:
                    self._submitting -= 1

    def _known_digest(self, key: FileKey) -> bytes | None:
        """The stored digest of a file whose size is unchanged: if its bytes still have it (a touch, the same
        bytes copied over it), the worker only reads it and the record keeps everything but the new stat."""
        stored = self._catalog.store.get(key.path)
        if stored is None or stored.encoding is None or stored.key.size != key.size:
            return None
        return stored.encoding.digest

    def _copy_digest(self, key: FileKey) -> bytes | None:
        """The digest of another stored file of this size whose encoding can be reused: if the new file's bytes
        have it, the worker only reads it and the new record takes that encoding (`_on_encoded`)."""
        for stored in self._catalog.store.of_size(key.size):
            if stored.key.path != key.path and stored.encoding is not None and self._reusable(stored.encoding):
                return stored.encoding.digest
        return None

    def _reusable(self, encoding: Encoding) -> bool:
        """Whether a stored encoding is what decoding its bytes again gives: written with the current thumbnail
        layout (and so with the capture fields), and with an embedding when the CNN is on."""
        return thumb_pixels(encoding.thumb) is not None and (self._encoder is None or encoding.embedding is not None)

    def _stored_encoding(self, digest: bytes) -> Encoding | None:
        """A reusable stored encoding of these bytes (with its embedding when the CNN is on), or None."""
        store = self._catalog.store
        for rid in store.rids_for_digest(digest):  # the first one, unless a record of the old layout leads
            stored = store.records([rid], embedding=True).get(rid)
            if stored is not None and stored.encoding is not None and self._reusable(stored.encoding):
                return stored.encoding if self._encoder is not None else replace(stored.encoding, embedding=None)
        return None

    def _unchanged_in_store(self, key: FileKey) -> bool:
        stored = self._catalog.store.get(key.path)
        return stored is not None and same_file_state(stored.key, key)

    def _moved_while_away(self, key: FileKey) -> bool:
        """A new path whose inode, size and mtime belong to a record whose path is gone: a move."""
        for old in self._catalog.store.paths_for_inode(key.dev, key.inode):
            if old == key.path or os.path.lexists(old):
                continue
            record = self._catalog.store.get(old)
            if record is not None and same_file_state(replace(record.key, path=key.path), key):
                self._put(self._commit_queue, Move(old, key.path))
                return True
        return False

    def _moved(self, src: str, dest: str) -> None:
        with self._state_lock:
            entry = self._settling.pop(src, None)
            in_flight = src in self._in_flight
        if self._catalog.store.get(src) is not None and not in_flight:
            self._put(self._commit_queue, Move(src, dest))
            return
        if entry is not None or in_flight:
            self._forget(src)
        self._observe(dest, immediate=True)  # a move-in is a finished file

    def _dir_moved(self, src: str, dest: str) -> None:
        prefix = src.rstrip("/") + "/"
        with self._state_lock:
            moving = [p for p in self._settling if p.startswith(prefix)]
        for path in moving:
            self._moved(path, dest.rstrip("/") + "/" + path[len(prefix):])
        self._put(self._commit_queue, Move(src, dest))

    def _forget(self, path: str) -> None:
        """Drop pending work at or under `path`."""
        prefix = path.rstrip("/") + "/"
        with self._state_lock:
            for gone in [p for p in self._settling if p == path or p.startswith(prefix)]:
                del self._settling[gone]

    def _vanished(self, path: str) -> None:
        """A file had events but was gone before it could be encoded: counted once per path."""
        self._forget(path)
        if path not in self._recently_vanished:
            self.counters.vanished += 1
            log.info("skipped %s: vanished before it could be encoded", path)
        self._recently_vanished[path] = None
        while len(self._recently_vanished) > 1024:
            self._recently_vanished.pop(next(iter(self._recently_vanished)))

    # ------------------------------------------------------------------ encode results
    def _on_encoded(self, key: FileKey, outcome: Outcome) -> None:
        """Pool callback (pool thread): route a result to the CNN queue or straight to commit."""
        if isinstance(outcome, SameContent):
            own = self._catalog.store.get(key.path)
            if own is not None and own.encoding is not None and own.encoding.digest == outcome.digest:
                self.counters.same_content += 1  # only its stat identity changed (a touch): no decode, no report
                self._put(self._commit_queue, Restat(key))
                return
            encoding = self._stored_encoding(outcome.digest)
            if encoding is None:  # the record it copies is gone since it was submitted: decode it after all
                with self._state_lock:
                    self._in_flight.pop(key.path, None)
                    self._settling[key.path] = _Settling(key, time.monotonic(), True)
                return
            self.counters.reused += 1  # a byte copy of a stored file: its record, under this path's stat identity
            self._put(self._commit_queue, FileRecord(key, encoding=encoding))
            return
        self.counters.decodes += 1
        if isinstance(outcome, Skipped):
            self._put(self._commit_queue, FileRecord(key, skip=outcome.reason))
            level = logging.DEBUG if outcome.reason in QUIET_REASONS else logging.INFO
            log.log(level, "skipped %s: %s", key.path, outcome,
                    extra={"FILE": key.path, "REASON": outcome.reason.value})
            return
        if self._encoder is not None and outcome.cnn_input is not None:
            self._put(self._cnn_queue, (key, outcome))
        else:
            self._put(self._commit_queue, FileRecord(key, encoding=outcome.encoding))

    def _commit_skip(self, key: FileKey, reason: SkipReason, detail: str) -> None:
        level = logging.DEBUG if reason in QUIET_REASONS else logging.INFO
        log.log(level, "skipped %s: %s: %s", key.path, reason.value, detail,
                extra={"FILE": key.path, "REASON": reason.value})
        self._put(self._commit_queue, FileRecord(key, skip=reason))

    # ------------------------------------------------------------------ CNN stage
    def _cnn_loop(self) -> None:
        encoder = self._encoder
        max_wait = self._settings.cnn_max_wait_ms / 1000
        while True:
            self.heartbeat["cnn"] = time.monotonic()
            try:
                first = self._cnn_queue.get(timeout=1.0)
            except queue.Empty:
                if self._stopping.is_set():
                    return
                continue
            if first is None:
                return
            batch = gather(self._cnn_queue, first, self._settings.cnn_batch_size, max_wait)
            assert encoder is not None  # this stage only receives work when there is an encoder
            vectors = encoder.embed_prepared([encoded.cnn_input for _, encoded in batch])  # type: ignore[misc]
            for (key, encoded), vector in zip(batch, vectors, strict=True):
                encoding = replace(encoded.encoding, embedding=vector.astype(np.float32))
                self._put(self._commit_queue, FileRecord(key, encoding=encoding))

    # ------------------------------------------------------------------ commit stage
    def _commit_loop(self) -> None:
        wait = self._settings.commit_wait_ms / 1000
        while True:
            self.heartbeat["commit"] = time.monotonic()
            try:
                first = self._commit_queue.get(timeout=1.0)
            except queue.Empty:
                if self._stopping.is_set():
                    return
                continue
            batch = gather(self._commit_queue, first, self._settings.commit_batch, wait)
            try:
                self._commit(batch)
            finally:
                for _ in batch:
                    self._commit_queue.task_done()

    def _commit(self, batch: list[Any]) -> None:
        if self._before_commit is not None:
            self._before_commit([item.key.path for item in batch if isinstance(item, FileRecord)])
        changes: list[Any] = []
        settled_again: list[str] = []
        done: list[FileKey] = []
        for item in batch:
            if isinstance(item, FileRecord | Restat):
                current = self._current_key(item.key.path)
                done.append(item.key)
                with self._state_lock:
                    self._in_flight.pop(item.key.path, None)
                    self.counters.committed += 1
                    dirty = item.key.path in self._dirty
                    self._dirty.discard(item.key.path)
                if current is None:
                    self._vanished(item.key.path)
                    continue  # vanished while decoding: a delete event follows
                if dirty or not same_file_state(current, item.key):
                    settled_again.append(item.key.path)
                    self.counters.reencoded_after_change += 1
                    continue
                if isinstance(item, FileRecord) and item.skip is not None and item.skip not in QUIET_REASONS:
                    self._count_skip(item.key.path)
            elif isinstance(item, Move):
                self.counters.moves += 1
            elif isinstance(item, Removal):
                if self._back_as_stored(item.path):
                    continue  # moved out and back (an undo right after a trash) before this removal was committed
                self.counters.removals += 1
            changes.append(item)
        applied = self._apply(changes) if changes else None
        with self._state_lock:  # committed: a file of the same size waiting for one of these can be submitted
            for key in done:
                if self._first_of_size.get(key.size) == key.path:
                    del self._first_of_size[key.size]
        if applied is not None:
            written = self._report(applied.matches)
            if self._on_batch is not None:
                added = [c.key.path for c in changes if isinstance(c, FileRecord) and c.encoding is not None]
                self._on_batch(added, dict(applied.matches), written)
            if self._reports is not None and any(isinstance(c, Removal | Move) for c in changes):
                self._reports.mark_summary_dirty()
        for path in settled_again:
            self._observe(path, immediate=True)
        with self._state_lock:
            self._state_lock.notify_all()

    def _back_as_stored(self, path: str) -> bool:
        """The file a removal was queued for is there again, as the store has it: it went away and came back
        (moved to the trash and restored) before the removal was committed, and the file's return found its
        record still stored (`_unchanged_in_store`), so committing the removal would lose a file on disk."""
        try:
            st = os.stat(path)
        except OSError:
            return False
        own = self._settings.own
        if own is not None and own.holds(path, st):  # dedupd's own file: its removal is meant, not stale
            return False
        return self._unchanged_in_store(file_key(path, st))

    def _current_key(self, path: str) -> FileKey | None:
        """The file's key now; None if it is gone. An entry that exists but cannot be followed keys by lstat."""
        try:
            return file_key(path, os.stat(path))
        except FileNotFoundError:
            return None
        except OSError:
            try:
                return file_key(path, os.lstat(path))
            except OSError:
                return None

    def _count_skip(self, path: str) -> None:
        extension = os.path.splitext(path)[1].lower() or "(none)"
        self.counters.skipped_by_extension[extension] = self.counters.skipped_by_extension.get(extension, 0) + 1

    def _apply(self, changes: list[Any]) -> Applied | None:
        """Commit `changes`, retrying (0.5 s, doubling to 30 s) while the store cannot write (a full disk, an
        I/O error): the stage is failing meanwhile, in `problems()`, the logs and STATUS=. None when given up:
        at a stop (the next start's scan finds those files) or for a batch the store refuses (a bug)."""
        delay = 0.5
        while True:
            try:
                applied = self._catalog.apply(changes)
            except StoreError:
                log.exception("the store refused a batch of %d changes; dropped (a rescan finds them)", len(changes))
                return None
            except Exception as exc:  # noqa: BLE001 - lmdb's errors: the store, not this stage, owns lmdb
                since = self._problems.get("commit", (time.monotonic(), ""))[0]
                self._problems["commit"] = (since, f"cannot write the store ({type(exc).__name__}: {exc}); retrying")
                log.error("commit of %d changes failed (%s: %s); retrying in %g s", len(changes), type(exc).__name__,
                          exc, delay)
                if self._stopping.wait(delay):
                    log.warning("stopping: %d changes were not committed; the next start's scan finds them",
                                len(changes))
                    return None
                self.heartbeat["commit"] = time.monotonic()
                delay = min(30.0, delay * 2)
                continue
            if self._problems.pop("commit", None) is not None:
                log.warning("the store takes writes again")
            return applied

    def _report(self, matches: Mapping[str, list[Match]]) -> dict[str, Path]:
        """One report per file that arrived with duplicates; returns where each was written. A report that
        cannot be written (a full disk) is logged and missed; the duplicate stays in the index and `duplicates`."""
        written = {}
        attached = self._catalog.store.companions(matches) if self._reports is not None else {}
        for path, found in matches.items():
            root = self._root_of(path) or os.path.dirname(path)
            self.counters.reports += 1
            if self._reports is None:
                continue
            try:
                written[path] = self._reports.write_event(
                    path, found, root, companions=[c.document() for c in attached.get(path, [])])
            except OSError as exc:
                self.counters.reports_lost += 1
                since = self._problems.get("reports", (time.monotonic(), ""))[0]
                self._problems["reports"] = (since, f"cannot write reports ({exc.strerror or exc})")
                log.error("cannot write the report for %s: %s", path, exc)
                continue
            self._problems.pop("reports", None)
        return written

    # ------------------------------------------------------------------ reconcile scan
    def _scan_loop(self) -> None:
        while True:
            self.heartbeat["scan"] = time.monotonic()
            try:
                path = self._scans.get(timeout=1.0)
            except queue.Empty:
                continue
            try:
                if path is None:
                    return
                self._reconcile(path)
            except Exception:  # noqa: BLE001 - one failed scan must not end scanning
                log.exception("reconcile scan of %s failed", path)
            finally:
                self._scans.task_done()
                with self._state_lock:
                    self._scan_running = self._scans.unfinished_tasks > 0
                    self._state_lock.notify_all()

    def _reconcile(self, path: str) -> None:
        """Encode what changed under `path` since the store saw it, and drop what is gone."""
        root = self._root_of(path)
        if root is None or root in self._offline:
            return
        seen: set[str] = set()
        found = 0
        try:
            for file_path, st in self._scanner(path):
                if self._stopping.is_set():
                    return
                while self._paused.is_set() and not self._stopping.is_set():
                    time.sleep(0.2)
                seen.add(file_path)
                found += 1
                self.heartbeat["scan"] = time.monotonic()
                self._scan_progress = (found, max(found, self._scan_progress[1]))
                key = file_key(file_path, st)
                if self._unchanged_in_store(key):
                    continue
                settled = time.time_ns() - st.st_mtime_ns >= self._settings.settle_ms * 1_000_000
                self._changes.put(Change(ChangeKind.CLOSED if settled else ChangeKind.MODIFIED, file_path, root))
        except OSError as exc:  # the root itself cannot be listed: offline, never "empty"
            log.warning("cannot scan %s (%s); keeping its records", path, exc)
            return
        if not os.path.isdir(path):
            return  # the root went away during the scan: not a mass deletion
        known = 0
        gone = []
        for _, record in self._catalog.store.iter_records(under=path):
            known += 1
            if record.key.path not in seen and not os.path.lexists(record.key.path):
                gone.append(record.key.path)
        if known >= 10 and len(gone) > self._settings.mass_deletion_guard * known:
            log.warning("%s: %d of %d known files are missing; treating it as an outage (an empty mount point?), "
                        "not deleting their records", path, len(gone), known)
            return
        for missing in gone:
            self._changes.put(Change(ChangeKind.DELETED, missing, root))
        self._scan_progress = (found, found)

