"""The watcher facade: roots -> `Change` events for a sink; the daemon's only view of the watch/ package.

Each root is its own state machine (`root.py`), run by the inotify backend (`inotify.py`) or, on network
filesystems (`polling = "auto"`, see mounts.NETWORK_FILESYSTEMS) and `polling = true` roots, by the polling
backend (`polling.py`). `check_health()`, called every few seconds by the daemon, restarts a dead watcher thread
(then RESCAN), probes every root from a helper thread (`prober.py`) so a hung network mount cannot hang the
caller, and drives the timers of degraded and offline roots.


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

import os
import threading
import time
from collections.abc import Callable, Sequence

from dedupd.records import Change
from dedupd.watch._watchdog_private import DEFAULT_BACKLOG
from dedupd.watch.policy import RootSpec
from dedupd.watch.polling import DEFAULT_MASS_DELETION_GUARD
from dedupd.watch.root import Root

#: How long start() waits for the first snapshot of polled roots; a slower one is followed by a RESCAN instead.
_BASELINE_WAIT_S = 60.0


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
        mass_deletion_guard: float = DEFAULT_MASS_DELETION_GUARD,
    ) -> None:
        self._sink = sink
        self._backlog = backlog
        self._guard = mass_deletion_guard
        self._probe_timeout_s = probe_timeout_s
        self._lock = threading.Lock()
        self._health_lock = threading.Lock()
        self._started = False
        self._roots: dict[str, Root] = {}
        for root in roots:
            spec = RootSpec.of(root)
            self._roots[spec.path] = Root(spec, sink, backlog, mass_deletion_guard)

    def start(self) -> None:
        """Adds the watches (or takes the first snapshot of polled roots) for every root, so that every change
        after it returns is reported; ROOT_OFFLINE for roots not there."""
        with self._lock:
            if self._started:
                return
            self._started = True
            roots = list(self._roots.values())
        self._start(roots)

    def _start(self, roots: list[Root]) -> None:
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
            root = self._roots[new_spec.path] = Root(new_spec, self._sink, self._backlog, self._guard)
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

    def pending_events(self) -> int:
        """inotify events read but not yet delivered to the sink, over every root: watchdog holds a lone
        IN_MOVED_FROM (a file moved out of a root) half a second to pair it, so a delete can lag its move."""
        with self._lock:
            roots = list(self._roots.values())
        return sum(root.pending_events() for root in roots)

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
