"""One root's state machine (watching | polling | degraded | offline): which backend runs it, its transitions,
and the serialised delivery of its Changes to the sink.

A root that vanishes, is renamed away, unmounted or stops answering is `offline` (ROOT_OFFLINE): nothing is
reported as deleted and its records stay; when it is back, ROOT_ONLINE asks the pipeline to reconcile. An empty
directory in place of the root we knew (an unmounted mount point) is not "back". A root whose watches do not fit
the inotify limits is `degraded` and rescanned every `poll_interval_s` until they do.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from watchdog.observers.api import EventEmitter, ObservedWatch
from watchdog.observers.inotify_c import InotifyFD

from dedupd.mounts import NETWORK_FILESYSTEMS, filesystem_type
from dedupd.records import Change, ChangeKind
from dedupd.watch._watchdog_private import InotifyReader, WatchGroup
from dedupd.watch.diagnostics import read_int, watch_limit_detail
from dedupd.watch.events import Outlet
from dedupd.watch.inotify import RootInotifyEmitter
from dedupd.watch.policy import PathPolicy, RootSpec
from dedupd.watch.polling import PollingEmitter
from dedupd.watch.prober import Probe, Prober
from dedupd.watch.walk import walk

log = logging.getLogger(__name__)

WATCHING, POLLING, DEGRADED, OFFLINE = "watching", "polling", "degraded", "offline"

_STOP_JOIN_S = 5.0


@dataclass(frozen=True, slots=True)
class Machine:
    """The running parts of one root: its threads (emitter first) and, for inotify, its watch group."""

    threads: tuple[EventEmitter | InotifyFD, ...] = ()
    group: WatchGroup | None = None

    def alive(self) -> bool:
        return all(thread.is_alive() for thread in self.threads)

    def stop(self) -> None:
        for thread in self.threads:
            thread.stop()
        for thread in self.threads:
            if thread.ident is not None and thread is not threading.current_thread():
                thread.join(_STOP_JOIN_S)


class Root:
    """One root's state machine: watching|polling|degraded|offline, its running parts, and delivery to the sink.

    Every transition bumps `_epoch` under `_lock`; an emitter delivers only while its epoch is current, so a
    retired emitter can never report after the Change that retired it.
    """

    def __init__(self, spec: RootSpec, sink: Callable[[Change], None], backlog: int, guard: float) -> None:
        self.spec = spec
        self.policy = PathPolicy(spec)
        self.prober = Prober(spec.path)
        self._sink = sink
        self._backlog = backlog
        self._guard = guard
        self._lock = threading.Lock()
        self._epoch = 0
        self._begun = False  # start() made its first transition: check() may act from now on
        self._stopped = False
        self._machine: Machine | None = None
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

    def pending_events(self) -> int:
        """inotify events of this root read but not yet delivered to the sink (0 for a polled root)."""
        machine = self._machine
        return machine.group.pending_events if machine is not None and machine.group is not None else 0

    def start(self, probe: Probe) -> bool:
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

    def _launch(self, probe: Probe, then: ChangeKind | None, reason: str) -> bool:
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
                self._machine, self.state, self.detail = self._build(Outlet(self, self._epoch, self._watched_path()))
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

    def _build(self, outlet: Outlet) -> tuple[Machine, str, str]:
        """The running parts for the root, its state and detail. Raises on anything but inotify's limits."""
        spec = self.spec
        fstype = filesystem_type(outlet.watched_root)
        self._polled = spec.polling is True or (spec.polling == "auto" and fstype in NETWORK_FILESYSTEMS)
        if self._polled:
            poller = PollingEmitter(spec, self.policy, outlet, self._guard)
            poller.start()
            why = f" ({fstype}: inotify misses other hosts' changes)" if spec.polling == "auto" else ""
            return Machine((poller,)), POLLING, f"polled every {spec.poll_interval_s:g} s{why}"
        try:
            reader = InotifyReader()
        except OSError as exc:
            if exc.errno != errno.EMFILE:
                raise
            limit = read_int("/proc/sys/fs/inotify/max_user_instances")
            return (
                Machine(),
                DEGRADED,
                (
                    f"inotify instance limit reached: raise fs.inotify.max_user_instances (now {limit}); "
                    f"rescanned every {spec.poll_interval_s:g} s meanwhile"
                ),
            )
        reader.start()
        watch = ObservedWatch(outlet.watched_root, recursive=spec.recursive, follow_symlink=spec.follow_symlinks)
        emitter = RootInotifyEmitter(
            watch, reader=reader, outlet=outlet, policy=PathPolicy(spec, outlet.watched_root), backlog=self._backlog
        )
        try:
            emitter.start()  # adds the watches
        except OSError as exc:
            reader.stop()
            if exc.errno != errno.ENOSPC:
                raise
            wanted = sum(1 for _ in walk(spec.path, self.policy, lambda _d, _e: None))
            return Machine(), DEGRADED, watch_limit_detail(wanted, wanted, spec.poll_interval_s)
        group = cast(WatchGroup, emitter.group)
        machine = Machine((emitter, reader), group)
        if group.watch_limit_hits:
            missing = len(group.watch_limit_hits)
            return machine, DEGRADED, watch_limit_detail(missing, missing + group.watch_count, spec.poll_interval_s)
        return machine, WATCHING, ""

    def check(self, probe: Probe, now: float) -> bool:
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
            detail = watch_limit_detail(missing, missing + group.watch_count, self.spec.poll_interval_s)
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

    def _may_return(self, probe: Probe, now: float) -> bool:
        if self._identity is not None and probe.identity != self._identity and not probe.has_entries:
            return False  # an empty directory where the root we knew was: an unmounted mount point
        # A polled root that lost its files at once comes back no sooner than one poll later (a CIFS glitch ends).
        return not self._polled or now - self._offline_since >= self.spec.poll_interval_s
