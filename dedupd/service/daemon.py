"""`dedupd run`: wiring, start order, signals, reload, and reverse teardown.

Start order: config -> store + index rebuild -> CNN session -> pipeline -> control socket ->
READY -> watchers -> reconcile scan of every root (the scan continues after READY and shows in
`STATUS=`). SIGTERM/SIGINT drain in-flight work and exit 0; SIGHUP reloads (what changed is applied,
the index is not rebuilt); SIGUSR1 logs every thread's stack. One `finally` tears down in reverse.
"""

import base64
import errno
import faulthandler
import logging
import os
import signal
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import asdict, replace
from datetime import date
from functools import partial
from pathlib import Path
from typing import Any, cast

import numpy as np

from dedupd import __version__
from dedupd.catalog import Catalog, Group, IndexConfig, sets_of
from dedupd.config import Settings, changed_keys, load_settings
from dedupd.encodepool import EncodePool, Outcome
from dedupd.errors import DedupdError, Skipped, SkipReason, StoreError
from dedupd.imaging.cnn import Encoder
from dedupd.imaging.encode import ENCODER_VERSION, EncodedFile
from dedupd.memory import release_free_memory
from dedupd.pathnames import is_under
from dedupd.paths import default_locations, find_config_file, no_config_reason
from dedupd.protocol import NEEDLES_WAIT_S, PROTOCOL_VERSION, ProtocolError
from dedupd.records import Change, ChangeKind, Encoding, Match
from dedupd.search.keep import POLICY as KEEP_POLICY
from dedupd.search.matcher import DUPLICATE, SIMILAR, evidence_rank
from dedupd.service.control import ControlServer
from dedupd.service.needles import NeedleJobs, NeedleTools
from dedupd.service.notify import DesktopNotifier
from dedupd.service.pipeline import OwnFiles, Pipeline, PipelineSettings, file_key, same_file_state
from dedupd.service.progress import DuplicateLog, ScanProgress
from dedupd.service.reports import ReportWriter, match_document
from dedupd.service.systemd import Notifier, configure_logging, listen_fds, sandbox_note, watchdog_interval_s
from dedupd.store import record_from_token, record_token
from dedupd.watch import RootSpec, Watcher, scan

log = logging.getLogger(__name__)

HEALTH_INTERVAL_S = 2.0
#: Share of wall-clock time the loop's whole-library refreshes (the review ranking after work, the
#: duplicates.json summary) may take: each waits 1/share times its last duration before it runs again. At 1M
#: records with 38k groups one ranking took seconds and ran at every pause of a 1,000-photo import
#: (BENCHMARKS.md "Archive"); in a small library they stay at the loop's pace.
REFRESH_SHARE = 0.05
_MAX_TOO_LONG_KEPT = 100_000  # paths remembered for the path_too_long count (each is over 4 KiB)

#: Settings a reload applies at once (besides the matcher's [phash] ones); the rest need a restart.
RELOADABLE = frozenset({"roots", "log_level", "methods", "cnn.min_similarity", "rescan_interval_s"})


def root_specs(settings: Settings) -> list[RootSpec]:
    return [replace(RootSpec.of(root), path=str(root.path)) for root in settings.roots]


def index_config(settings: Settings) -> IndexConfig:
    return IndexConfig(matcher=settings.matcher_settings())


class Paced:
    """Paces a repeated job to a share of wall-clock time: after a run that took t s from `started`, the
    job is due again t / share s after `started` (at once after a quick run)."""

    def __init__(self, share: float) -> None:
        self._share = share
        self._next = 0.0

    def due(self) -> bool:
        return time.monotonic() >= self._next

    def ran(self, started: float) -> None:
        self._next = started + (time.monotonic() - started) / self._share


class Daemon:
    """One running dedupd: owns every component and the handlers `dedupctl` reaches."""

    def __init__(self, settings: Settings, config_path: Path | None, *,
                 before_commit: Callable[[list[str]], object] | None = None) -> None:
        """`before_commit`: passed to the pipeline (see `Pipeline`)."""
        self.settings = settings
        self._before_commit = before_commit
        self.config_path = config_path
        self.started = time.monotonic()
        self.state = "starting"
        self.notifier = Notifier()
        self._stop = threading.Event()
        self._reload_requested = threading.Event()
        #: Set once the watchers run and the start-up scan of every root is queued: until then the control
        #: socket already answers, but `status` says "starting" and `wait-idle` waits (a start-up race).
        self._up = threading.Event()
        self._extra_roots: list[RootSpec] = []
        self.encoder: Encoder | None = None
        self.catalog: Catalog | None = None
        self.pipeline: Pipeline | None = None
        self.control: ControlServer | None = None
        self.watcher: Watcher | None = None
        self.desktop: DesktopNotifier | None = None
        self.reports: ReportWriter | None = None
        self.needles: NeedleJobs | None = None
        self._exit_code = 0
        self._last_status = ""
        self._healthy = True
        self._state_lock = threading.Lock()
        self.progress = ScanProgress()
        self.duplicate_log = DuplicateLog()
        self._trimmed_at = -1
        self._ranking_pace, self._summary_pace = Paced(REFRESH_SHARE), Paced(REFRESH_SHARE)
        self._polled_roots: frozenset[str] = frozenset()
        #: Paths the reconcile walk could not reach because they are nested beyond PATH_MAX (counted in status).
        self._too_long: set[str] = set()

    # ------------------------------------------------------------------ lifecycle
    def run(self) -> int:
        self._install_signals()
        try:
            self._start()
            self._loop()
            return self._exit_code
        finally:
            self._teardown()

    def _start(self) -> None:
        settings = self.settings
        try:
            settings.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # the store lists every library path
        except OSError as exc:
            raise DedupdError(f"cannot create the state directory {settings.state_dir}: {exc.strerror or exc}"
                              + (f" ({exc.filename})" if exc.filename and exc.filename != str(settings.state_dir)
                                 else "")) from exc
        if not listen_fds():  # a squatted socket directory is refused before the slow start-up work
            ControlServer.check_directory(settings.socket)
        if settings.cnn.enabled:
            self.encoder = Encoder(settings.cnn.model, batch_size=settings.cnn.batch_size,
                                   providers=settings.cnn.providers, intra_op_threads=settings.cnn.intra_op_threads)
        model_id = self.encoder.spec.fingerprint() if self.encoder else None
        self.catalog = Catalog.open(settings.state_dir, index_config(settings), encoder_version=ENCODER_VERSION,
                                    model_id=model_id, dim=self.encoder.dim if self.encoder else None)
        reports = ReportWriter(settings.report_dir, retention_days=settings.report_retention_days) \
            if settings.notify.json else None
        self.reports = reports
        cnn_spec = self.encoder.spec if self.encoder else None
        if settings.notify.desktop:
            self.desktop = DesktopNotifier()
            self.desktop.start()

        def make_pool(on_result: Callable[..., None]) -> EncodePool:
            return EncodePool(settings.encode_workers, on_result, timeout_s=settings.decode_timeout_s,
                              cnn_spec=cnn_spec, max_pixels=settings.max_image_pixels,
                              max_bytes=settings.max_file_size,
                              idle_stop_s=settings.encode_idle_stop_s or None)

        self.pipeline = Pipeline(
            self.catalog, make_pool, self.encoder, reports,
            PipelineSettings(settle_ms=settings.settle_ms, polled_settle_ms=settings.settle_ms_for(polled=True),
                             cnn_batch_size=settings.cnn.batch_size, cnn_max_wait_ms=settings.cnn.max_wait_ms,
                             min_file_size=settings.min_file_size, max_file_size=settings.max_file_size,
                             mass_deletion_guard=settings.mass_deletion_guard,
                             own=OwnFiles.of([settings.state_dir, settings.report_dir, f"{settings.socket}.lock"])),
            root_of=self.root_of, scanner=self._scan_path,
            on_batch=self._on_batch,
            is_polled=lambda path: self.root_of(path) in self._polled_roots,
            before_commit=self._before_commit,
        )
        self.pipeline.start()
        self.needles = NeedleJobs(NeedleTools(
            encode=self._request_encode, embed=self._embedded, matches=self.catalog.matches,
            indexed=self._indexed_unchanged, in_flight=2 * settings.encode_workers,
            wait_s=2 * settings.decode_timeout_s + 10))
        fds = listen_fds()
        self.control = ControlServer(str(settings.socket), self.handlers(), allowed_gid=self._socket_gid(),
                                     listen_fd=fds[0] if fds else None)
        self.control.start()
        self.notifier.notify(READY=1, STATUS="index loaded; scanning roots")
        records = cast(dict[str, int], self.catalog.stats()["records"])
        log.info("dedupd %s ready: %d records, socket %s, config %s", __version__, records.get("encoded", 0),
                 settings.socket, find_config_file(self.config_path) or f"built-in defaults ({no_config_reason()})")
        if not self._roots():
            log.warning("no roots configured: nothing is watched; add [[roots]] to %s (or use `dedupctl watch add "
                        "DIR`)", find_config_file(self.config_path) or default_locations().config_file)
        self.watcher = Watcher(self._roots(), self.pipeline.on_change,
                               mass_deletion_guard=settings.mass_deletion_guard)
        self.watcher.start()
        self._polled_roots = self._polling_roots()
        self.progress.begin(self.pipeline.counters.committed)
        for spec in self._roots():
            self.pipeline.rescan(spec.path)
        self.state = "scanning"
        self._up.set()

    def _polling_roots(self) -> frozenset[str]:
        assert self.watcher is not None
        return frozenset(str(r["path"]).rstrip("/") for r in self.watcher.roots_status() if r["state"] == "polling")

    def _socket_gid(self) -> int | None:
        if not self.settings.socket_group:
            return None
        import grp

        return grp.getgrnam(self.settings.socket_group).gr_gid

    def _loop(self) -> None:
        assert self.pipeline is not None and self.watcher is not None and self.catalog is not None
        watchdog = watchdog_interval_s()
        last_rescan = time.monotonic()
        last_prune: date | None = None
        while not self._stop.wait(min(HEALTH_INTERVAL_S, watchdog or HEALTH_INTERVAL_S)):
            if self._reload_requested.is_set():
                self._reload_requested.clear()
                try:
                    self.reload()
                except ProtocolError:
                    pass  # already logged; the running configuration stays
            self._polled_roots = self._polling_roots()
            stall_s = max(5.0, 3 * (watchdog or 40.0))
            healthy = self.watcher.check_health() and self.pipeline.alive(stall_s)
            if healthy and watchdog:
                self.notifier.notify(WATCHDOG=1)
            elif not healthy and self._healthy:
                log.error("a pipeline stage or a watcher made no progress for %g s: %s (SIGUSR1 logs every "
                          "thread's stack)", stall_s, "watchdog pings stop" if watchdog else "no watchdog to tell")
            self._healthy = healthy
            dead = self.pipeline.dead_stages()
            if dead:  # a bug: stop cleanly, non-zero, so the service manager restarts a whole daemon
                log.critical("pipeline stage %s died; stopping (exit 1)", ", ".join(dead))
                self._exit_code = 1
                break
            self._update_state()
            self.duplicate_log.flush()
            committed = self.pipeline.counters.committed
            # not while files are still coming (an import): a review page asked for meanwhile ranks on demand
            if (self.state == "running" and committed != self._trimmed_at and self.pipeline.pending_files() == 0
                    and self._ranking_pace.due()):
                started = time.monotonic()
                self._trimmed_at = committed  # fallen idle after work: give memory back
                # and rank the groups as the review page orders them, so a page it asks for is a slice
                self.catalog.group_page(DUPLICATE, limit=0, protected_roots=self._protected_roots())
                release_free_memory()
                self._ranking_pace.ran(started)
            if self.reports is not None and self._summary_pace.due():
                try:
                    started = time.monotonic()
                    if self.reports.refresh_summary(self.duplicate_documents):
                        self._summary_pace.ran(started)
                    if last_prune != date.today():
                        self.reports.prune()
                        last_prune = date.today()
                except OSError as exc:  # a full disk: the summary is retried on the next round
                    log.error("cannot write %s: %s", exc.filename or "the report summary", exc.strerror or exc)
            interval = self.settings.rescan_interval_s
            if interval and time.monotonic() - last_rescan >= interval:
                last_rescan = time.monotonic()
                for spec in self._roots():
                    self.pipeline.rescan(spec.path)

    def _update_state(self) -> None:
        """scanning (reconcile walk or its files still pending) -> running; STATUS= follows, sent on change.
        Called by the main loop and by `status`, so `status` never lags behind `wait-idle`."""
        assert self.pipeline is not None
        with self._state_lock:
            walking = bool(self.pipeline.scan_state()["running"])
            pending = self.pipeline.pending_files()
            scanning = walking or (self.state == "scanning" and pending > 0)
            progress = self.progress.observe(scanning, self.pipeline.counters.committed, pending, walking)
            problems = self.pipeline.problems()
            if not self._healthy:
                status = "stalled: a pipeline stage or a watcher makes no progress"
            elif problems:
                status = "failing: " + "; ".join(f"{stage}: {why}" for stage, why in sorted(problems.items()))
            elif self.pipeline.paused:
                self.state = "paused"
                status = "paused" + (f" ({pending:,} files pending)" if pending else "")
            elif scanning:
                self.state = "scanning"
                status = f"scanning: {progress.text()}" if progress is not None else "scanning"
            else:
                self.state = "running"
                status = "watching"
            if status != self._last_status:
                self._last_status = status
                self.notifier.notify(STATUS=status)

    def _on_batch(self, added: Sequence[str], duplicates: Mapping[str, Sequence[Match]],
                  reports: Mapping[str, Path]) -> None:
        self.duplicate_log.record(added, duplicates, reports)
        if self.desktop is not None:
            self.desktop.record(added, duplicates, reports)

    def _scan_document(self) -> dict[str, Any]:
        """`status`'s `scan`: running, and the current scan's images done of total with rate and estimate."""
        assert self.pipeline is not None
        progress = self.progress.last()
        document: dict[str, Any] = {"running": self.state == "scanning", "done": 0, "total": 0, "walking": False,
                                    "rate": None, "eta_s": None, "elapsed_s": 0.0, "summary": ""}
        return document | (progress.document() if progress is not None and self.state == "scanning" else {})

    def stop(self) -> None:
        self._stop.set()

    def _teardown(self) -> None:
        self.state = "stopping"
        self.notifier.notify(STOPPING=1, STATUS="draining")
        steps: list[tuple[str, Callable[[], None] | None]] = [
            ("intake", self.pipeline.close_intake if self.pipeline else None),
            ("watcher", self.watcher.stop if self.watcher else None),
            ("pipeline", partial(self.pipeline.stop, drain=True) if self.pipeline else None),
            ("control", self.control.stop if self.control else None),
            ("notifications", self.desktop.stop if self.desktop else None),
            ("summary", self._final_summary),
            ("duplicate log", partial(self.duplicate_log.flush, force=True)),
            ("catalog", self.catalog.close if self.catalog else None),
        ]
        for step, action in steps:
            if action is None:
                continue
            try:
                action()
            except Exception:  # noqa: BLE001 - tear down the rest whatever one part does
                log.exception("error while stopping the %s", step)
        log.info("dedupd stopped")

    def _final_summary(self) -> None:
        if self.reports is not None and self.catalog is not None:
            self.reports.mark_summary_dirty()
            self.reports.refresh_summary(self.duplicate_documents, force=True)

    def _install_signals(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self.stop())
        signal.signal(signal.SIGINT, lambda *_: self.stop())
        signal.signal(signal.SIGHUP, lambda *_: self._reload_requested.set())
        faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True)

    # ------------------------------------------------------------------ roots
    def _roots(self) -> list[RootSpec]:
        return root_specs(self.settings) + self._extra_roots

    def root_of(self, path: str) -> str | None:
        best = None
        for spec in self._roots():
            root = spec.path.rstrip("/")
            if is_under(path, root) and (best is None or len(root) > len(best)):
                best = root
        return best

    def _scan_path(self, path: str) -> Iterator[tuple[str, os.stat_result]]:
        """The reconcile walk of `path` with its root's policy (excludes, hidden files, symlinks)."""
        root = self.root_of(path)
        spec = next(s for s in self._roots() if s.path.rstrip("/") == root)
        return scan(spec, self._scan_skipped, under=path)

    def _scan_skipped(self, path: str, exc: OSError) -> None:
        """A directory (or file) the walk cannot reach: logged; one nested beyond PATH_MAX is also counted."""
        if exc.errno == errno.ENAMETOOLONG:
            if len(self._too_long) < _MAX_TOO_LONG_KEPT:
                self._too_long.add(path)
            log.warning("skipped %s…: nested beyond PATH_MAX (%d bytes), it cannot be opened by path",
                        path[:200], len(os.fsencode(path)))
        else:
            log.warning("scan: cannot list %s: %s", path, exc.strerror or exc)

    def _drop_root(self, path: str) -> None:
        """A root is no longer watched: stop watching it and forget its records (nothing is reported)."""
        assert self.watcher is not None and self.pipeline is not None
        self.watcher.remove_root(path)
        self.pipeline.on_change(Change(ChangeKind.DIR_DELETED, path, path, reason="root removed"))

    def _protected_roots(self) -> list[str]:
        return [str(root.path) for root in self.settings.roots if root.protected]

    # ------------------------------------------------------------------ reload
    def reload(self) -> dict[str, list[str]]:
        """Re-read the config file and apply what changed (roots, thresholds, logging); no index rebuild.
        The reply names the changed keys and, of those, the ones that take effect only after a restart."""
        self._require_up("reload")
        self.notifier.notify(RELOADING=1, MONOTONIC_USEC=time.monotonic_ns() // 1000)
        try:
            new = load_settings(self.config_path)
        except DedupdError as exc:
            log.error("reload refused, keeping the running configuration: %s", exc)
            self.notifier.notify(READY=1)
            raise ProtocolError("bad_args", f"config not reloaded: {exc}") from exc
        changed = changed_keys(self.settings, new)
        restart_needed = [key for key in changed if key not in RELOADABLE and not key.startswith("phash.")]
        if restart_needed:
            log.warning("these settings take effect after a restart: %s", ", ".join(restart_needed))
        old_roots = {spec.path for spec in self._roots()}
        self.settings = new
        logging.getLogger().setLevel(new.log_level)
        assert self.watcher is not None and self.pipeline is not None and self.catalog is not None
        self.catalog.set_matcher(new.matcher_settings())
        new_roots = {spec.path: spec for spec in self._roots()}
        for path in old_roots - set(new_roots):
            self._drop_root(path)
        for path in set(new_roots) - old_roots:
            self.watcher.add_root(new_roots[path])
            self.pipeline.rescan(path)
        if self.reports is not None:
            self.reports.mark_summary_dirty()
        log.info("configuration reloaded; changed: %s", ", ".join(changed) or "nothing")
        self.notifier.notify(READY=1, STATUS="configuration reloaded")
        return {"changed": changed, "restart_needed": restart_needed}

    # ------------------------------------------------------------------ control handlers
    def handlers(self) -> dict[str, Callable[[dict[str, Any]], dict[str, Any]]]:
        return {
            "hello": lambda args: {"protocol": PROTOCOL_VERSION, "version": __version__},
            "status": lambda args: self.status(),
            "wait-idle": self._wait_idle,
            "query": self._query,
            "duplicates": lambda args: self._groups_of(args, DUPLICATE),
            "similar": self._similar,
            "to-remove": self._to_remove,
            "rescan": self._rescan,
            "pause": self._pause,
            "resume": self._resume,
            "reload": lambda args: self.reload(),
            "watch": self._watch,
            "export": self._export,
            "needles": self._needles,
            "ignore": self._ignore,
            "unignore": self._unignore,
            "records": self._records,
            "expect": self._expect,
            "changed": self._changed,
        }

    def _require_up(self, verb: str) -> None:
        """Verbs that change the watched roots refuse while the daemon is still starting (no watcher yet)."""
        if not self._up.is_set():
            raise ProtocolError("unavailable", f"dedupd is starting: try `{verb}` again once it is up")

    def status(self) -> dict[str, Any]:
        assert self.catalog is not None and self.pipeline is not None
        up = self._up.is_set()
        if up:
            self._update_state()
        stats = self.catalog.stats()
        counters = self.pipeline.counters
        protected = set(self._protected_roots())
        roots = []
        starting = [{"path": spec.path, "state": "starting", "recursive": spec.recursive, "watches": 0,
                     "detail": "not watched yet"} for spec in self._roots()]
        for entry in self.watcher.roots_status() if up and self.watcher is not None else starting:
            entry = dict(entry)
            entry["protected"] = entry["path"] in protected
            if self.pipeline.paused:
                entry["state"] = "paused"
            roots.append(entry)
        records = cast(dict[str, int], stats["records"])
        return {
            "state": self.state,
            "problems": self.pipeline.problems(),
            "version": __version__,
            "protocol": PROTOCOL_VERSION,
            "uptime_s": round(time.monotonic() - self.started, 1),
            "roots": roots,
            "counts": {
                "indexed": records.get("encoded", 0),
                "pending": self.pipeline.pending(),
                "decodes": counters.decodes,
                "encode_workers": self.pipeline.encode_workers(),
                "duplicates": stats["groups"],
                "duplicate_files": stats["grouped_files"],
                "reports": counters.reports,
                "same_content": counters.same_content,
                "reused": counters.reused,
                "skipped": self._skip_counts(records, counters.vanished, len(self._too_long)),
                # an image's files that are no image (dedupd.companions): counted, never skipped
                "sidecars": records.get(f"skipped:{SkipReason.SIDECAR.value}", 0),
                "motion_files": records.get(f"skipped:{SkipReason.MOTION.value}", 0),
                "skipped_by_extension": dict(counters.skipped_by_extension),
            },
            "index": stats["index"],
            "cnn": {"enabled": self.encoder is not None,
                    "model": self.encoder.spec.name if self.encoder else None,
                    "provider": self.encoder.provider if self.encoder else None,
                    "dim": self.encoder.dim if self.encoder else None},
            "scan": self._scan_document(),
        }

    @staticmethod
    def _skip_counts(records: dict[str, int], vanished: int, too_long: int = 0) -> dict[str, int]:
        """Skipped files by reason: what the store holds, plus files that vanished before their turn and paths
        (files or whole directories) nested beyond PATH_MAX."""
        companions = {f"skipped:{SkipReason.SIDECAR.value}", f"skipped:{SkipReason.MOTION.value}"}
        counts = {key.split(":", 1)[1]: n for key, n in records.items()
                  if key.startswith("skipped:") and n and key not in companions}
        if vanished:
            counts["vanished"] = counts.get("vanished", 0) + vanished
        if too_long:
            counts["path_too_long"] = too_long
        return counts

    def _wait_idle(self, args: dict[str, Any]) -> dict[str, Any]:
        assert self.pipeline is not None
        timeout = float(args["timeout"])
        started = time.monotonic()
        if not self._up.wait(timeout):  # idle before the start-up scan is even queued would be a lie
            raise ProtocolError("timeout", f"still starting after {timeout:g} s")
        timeout = max(0.0, timeout - (time.monotonic() - started))
        if self.pipeline.paused and self.pipeline.pending():
            raise ProtocolError("unavailable", f"dedupd is paused with {self.pipeline.pending()} pending: nothing "
                                               "is encoded until `dedupctl resume`")
        deadline = time.monotonic() + timeout
        # Idle = the pipeline has nothing and no watcher still holds an event for it (a file moved out of a
        # root is a lone IN_MOVED_FROM that watchdog holds to pair; on a loaded machine its delete could
        # otherwise reach the pipeline after the quiet window): wait for both at once.
        while self.pipeline.wait_idle(max(0.0, deadline - time.monotonic())):
            if self.watcher is None or not self.watcher.pending_events():
                return {"idle": True, "waited_s": round(time.monotonic() - started, 3)}
            while self.watcher.pending_events() and time.monotonic() < deadline:
                time.sleep(0.05)
            if time.monotonic() >= deadline:
                break
        paused = " and paused (dedupctl resume)" if self.pipeline.paused else ""
        held = self.watcher.pending_events() if self.watcher is not None else 0
        raise ProtocolError("timeout", f"still busy{paused} after {timeout:g} s ({self.pipeline.pending()} "
                                       f"pending" + (f", {held} watcher events not yet read" if held else "") + ")")

    def duplicate_documents(
        self, method: str | None = None, under: str | None = None, tier: str = DUPLICATE
    ) -> list[list[dict[str, Any]]]:
        """Groups of a tier, each member with its strongest match inside the group."""
        assert self.catalog is not None
        return [_group_document(group) for group in self.catalog.groups(under=under, method=method, tier=tier)]

    def _groups_of(self, args: dict[str, Any], tier: str) -> dict[str, Any]:
        """`duplicates` / `similar`: every group, sorted by path; or, with `order`, `offset`, `limit` or
        `records`, one page of them with `total` (groups in the tier), in path order or, with order "free", by
        space to free as the review page shows them (then `free_bytes` of the whole tier and, per group, the
        keep policy's plan); with `records`, the store's records of the page's members."""
        assert self.catalog is not None
        method, under = args.get("method"), args.get("under")
        if not {"order", "offset", "limit"} & args.keys() and not args.get("records"):
            return {"groups": self.duplicate_documents(method, under, tier)}
        offset, limit = args.get("offset", 0), args.get("limit")
        answer: dict[str, Any] = {"order": args.get("order", "path"), "offset": offset}
        if answer["order"] == "free":
            page = self.catalog.group_page(tier, offset, limit, under=under, method=method,
                                           protected_roots=self._protected_roots())
            groups = [ranked.group for ranked in page.groups]
            answer |= {"total": page.total, "free_bytes": page.free_bytes, "plans": [
                {"keep": list(r.plan.keep) if r.plan else [], "why": r.plan.why if r.plan else None,
                 "remove": list(r.plan.remove) if r.plan else [], "free_bytes": r.free_bytes} for r in page.groups]}
        else:
            every = self.catalog.groups(under=under, method=method, tier=tier)
            groups = every[offset:None if limit is None else offset + limit]
            answer["total"] = len(every)
        answer["groups"] = [_group_document(group) for group in groups]
        if args.get("records"):
            answer["records"] = self._record_documents([path for group in groups for path in group.paths])
        return answer

    def _similar(self, args: dict[str, Any]) -> dict[str, Any]:
        """Groups of different captures of one scene (`[matcher] similar`; empty when it is off)."""
        enabled = self.settings.matcher.similar
        return {"enabled": enabled, **(self._groups_of(args, SIMILAR) if enabled else {"groups": [], "total": 0})}

    def _to_remove(self, args: dict[str, Any]) -> dict[str, Any]:
        assert self.catalog is not None
        plans = self.catalog.keep_plan(under=args.get("under"), protected_roots=self._protected_roots(),
                                       method=args.get("method"))
        return {"files": sorted(path for plan in plans for path in plan.remove),
                "groups": [{"keep": list(plan.keep), "why": plan.why, "remove": list(plan.remove)} for plan in plans],
                "policy": KEEP_POLICY}

    def _request_encode(self, path: str) -> Future[Outcome]:
        """Decode a file for a request in the encode pool: a regular file (also through a symlink) no larger
        than max_file_size, else an error reply at once; the pool applies the decode timeout."""
        assert self.pipeline is not None
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise ProtocolError("not_found", f"no such file: {path}") from None
        except OSError as exc:
            raise ProtocolError("bad_args", f"{path}: unreadable: {exc.strerror}") from None
        if not stat.S_ISREG(st.st_mode):
            raise ProtocolError("bad_args", f"{path}: not a regular file")
        if st.st_size > self.settings.max_file_size:
            raise ProtocolError("bad_args", f"{path}: too_large: {st.st_size} bytes; max_file_size is "
                                            f"{self.settings.max_file_size}")
        return self.pipeline.encode_file(path)

    def _embedded(self, encoded: list[EncodedFile]) -> list[Encoding]:
        """Encodings with their CNN embeddings (one batched call), for files decoded for a request."""
        inputs = [(i, e.cnn_input) for i, e in enumerate(encoded) if e.cnn_input is not None]
        out = [e.encoding for e in encoded]
        if self.encoder is not None and inputs:
            vectors = self.encoder.embed_prepared([tensor for _, tensor in inputs])
            for (i, _), vector in zip(inputs, vectors, strict=True):
                out[i] = replace(out[i], embedding=vector)
        return out

    def _indexed_unchanged(self, path: str) -> bool:
        """The store holds an encoding of `path` as it is on disk now."""
        assert self.catalog is not None
        stored = self.catalog.store.get(path)
        try:
            st = os.stat(path)
        except OSError:
            return False
        return stored is not None and stored.encoding is not None and same_file_state(stored.key, file_key(path, st))

    def _encode_outside(self, path: str) -> Encoding:
        """Encode a file that is not (or not yet) in the store, in the encode pool."""
        try:
            outcome = self._request_encode(path).result(timeout=2 * self.settings.decode_timeout_s + 10)
        except FutureTimeout:
            raise ProtocolError("timeout", f"{path}: the encode pool did not get to it in time") from None
        except RuntimeError as exc:  # the pool closed: the daemon is stopping
            raise ProtocolError("unavailable", str(exc)) from None
        if isinstance(outcome, Skipped):
            raise ProtocolError("bad_args", f"{path}: {outcome.reason.value}: {outcome.detail}")
        assert isinstance(outcome, EncodedFile)  # a request knows no digest: never SameContent
        return self._embedded([outcome])[0]

    def _query(self, args: dict[str, Any]) -> dict[str, Any]:
        assert self.catalog is not None
        path = args["path"]
        if not os.path.isfile(path):
            raise ProtocolError("not_found" if not os.path.exists(path) else "bad_args",
                                _not_a("file", path, "for a folder: dedupctl needles DIR"))
        stored = self.catalog.store.get(path, embedding=True)
        indexed = stored is not None and stored.encoding is not None
        encoding = stored.encoding if stored is not None and stored.encoding is not None else self._encode_outside(path)
        method = args.get("method")
        try:
            if method:
                matches = self.catalog.near(encoding, method, threshold=args.get("threshold"),
                                            min_similarity=args.get("min_similarity"))
            else:  # by path when indexed, so files the user ignored with it stay out
                matches = self.catalog.matches(path if indexed else encoding)
        except StoreError as exc:
            raise ProtocolError("bad_args", str(exc)) from exc
        matches = [m for m in matches if m.path != path and (m.tier == DUPLICATE or self.settings.matcher.similar)]
        result: dict[str, Any] = {"file": path, "matches": [{**match_document(m), "tier": m.tier} for m in matches]}
        if indexed:  # its sidecars and motion file (dedupd.companions), as the store knows them
            result["companions"] = [c.document() for c in self.catalog.store.companions([path]).get(path, [])]
        if args.get("explain"):
            result["explain"] = self.catalog.explain(encoding, [m.path for m in matches])
        return result

    def _rescan(self, args: dict[str, Any]) -> dict[str, Any]:
        """Reconcile PATH (or every root). A path that is gone is still reconciled if records lie under it."""
        assert self.pipeline is not None and self.catalog is not None
        path = args.get("path")
        targets = [path] if path else [spec.path for spec in self._roots()]
        for target in targets:
            if self.root_of(target) is None:
                raise ProtocolError("bad_args", f"{target} is not under a watched root")
            if not os.path.lexists(target) and not self.catalog.store.rids_under(target):
                raise ProtocolError("not_found", f"no such file or directory: {target} (and no records under it)")
        for target in targets:
            self.pipeline.rescan(target)
        return {"scheduled": targets}

    def _pause(self, args: dict[str, Any]) -> dict[str, Any]:
        assert self.pipeline is not None
        self.pipeline.pause()
        self.state = "paused"
        return {"state": self.state}

    def _resume(self, args: dict[str, Any]) -> dict[str, Any]:
        assert self.pipeline is not None
        self.pipeline.resume()
        self.state = "running"
        return {"state": self.state}

    def _watch(self, args: dict[str, Any]) -> dict[str, Any]:
        self._require_up("watch")
        assert self.watcher is not None and self.pipeline is not None
        action = args.get("action", "list")
        path = os.path.abspath(args["path"]) if args.get("path") else None
        if action == "add" and path:
            if not os.path.isdir(path):
                raise ProtocolError("not_found", f"no such directory: {path}")
            if self.root_of(path) is None:
                spec = RootSpec(path=path)
                self._extra_roots.append(spec)
                self.watcher.add_root(spec)
                self.pipeline.rescan(path)
        elif action == "remove" and path:
            if not any(spec.path == path for spec in self._extra_roots):
                raise ProtocolError("bad_args", f"{path} was not added with `watch add` (edit the config to remove it)")
            self._extra_roots = [spec for spec in self._extra_roots if spec.path != path]
            self._drop_root(path)
        return {"roots": self.status()["roots"]}

    def _export(self, args: dict[str, Any]) -> dict[str, Any]:
        assert self.catalog is not None
        if args.get("format") == "parquet":
            return self._export_parquet(args["output"])
        method = args.get("method") or "phash"
        encodings = {path: value.tolist() if isinstance(value, np.ndarray) else value
                     for path, value in self.catalog.store.export(method)}
        return {"method": method, "encodings": encodings}

    def _export_parquet(self, output: str) -> dict[str, Any]:
        """Every record as dedupd's Parquet format (`dedupd.bulk.export`), written by the daemon to `output`."""
        from dedupd.bulk.export import export_store

        assert self.catalog is not None
        if not os.path.isdir(os.path.dirname(output)):
            raise ProtocolError("not_found", f"no such directory: {os.path.dirname(output)}")
        try:
            rows, left_out = export_store(self.catalog.store, output, encoder=ENCODER_VERSION)
        except OSError as exc:
            raise ProtocolError("bad_args", f"cannot write {output}: {exc.strerror or exc}") from None
        for path in left_out:
            log.warning("export: left out %r: not UTF-8 (the Parquet format keeps paths as text)", path)
        return {"format": "parquet", "output": output, "rows": rows, "left_out": left_out}

    def _needles(self, args: dict[str, Any]) -> dict[str, Any]:
        """Which images of DIR are already in the library, and which of its folders are wholly there: a job
        (dedupd.service.needles) that this request starts (`dir`) or asks about (`job`), waiting `wait` s."""
        assert self.needles is not None
        job = args.get("job", "")
        try:
            if "dir" in args:
                if not os.path.isdir(args["dir"]):
                    raise ProtocolError("not_found" if not os.path.exists(args["dir"]) else "bad_args",
                                        _not_a("directory", args["dir"], "for one file: dedupctl query FILE"))
                job = self.needles.start(args["dir"])
            result = self.needles.poll(job, args.get("wait", NEEDLES_WAIT_S))
        except KeyError:
            raise ProtocolError("not_found", f"no needles job {job!r} (finished and fetched, or expired)") from None
        except RuntimeError as exc:
            raise ProtocolError("busy", str(exc)) from None
        if result["done"]:
            result["files"] = {path: [match_document(m) for m in found] for path, found in result["files"].items()}
        return result

    def _ignore(self, args: dict[str, Any]) -> dict[str, Any]:
        """`ignore` PATHS (these files are not duplicates of each other), or with `list` the pairs ignored."""
        assert self.catalog is not None
        if args.get("list"):
            return {"pairs": [list(pair) for pair in self.catalog.ignored_pairs()]}
        return {"ignored": self._ignoring(self.catalog.ignore, args["paths"])}

    def _unignore(self, args: dict[str, Any]) -> dict[str, Any]:
        assert self.catalog is not None
        return {"unignored": self._ignoring(self.catalog.unignore, args["paths"])}

    def _ignoring(self, change: Callable[[list[str]], int], paths: list[str]) -> int:
        try:
            count = change([os.path.abspath(p) for p in paths])
        except StoreError as exc:
            raise ProtocolError("not_found", str(exc)) from exc
        if self.reports is not None:
            self.reports.mark_summary_dirty()
        return count


    def _records(self, args: dict[str, Any]) -> dict[str, Any]:
        """What the store holds for each path (null when nothing): what `dedupctl resolve` checks before acting."""
        return {"records": self._record_documents(args["paths"], tokens=args["tokens"])}

    def _record_documents(self, paths: list[str], tokens: bool = False) -> dict[str, Any]:
        assert self.catalog is not None
        protected = self._protected_roots()
        companions = self.catalog.store.companions(paths)
        found = {n: rec for n, path in enumerate(paths) if (rec := self.catalog.store.get(path, embedding=tokens))}
        sets = sets_of(found)  # capture sets among the paths asked about (a group's members: one exposure's files)
        out: dict[str, Any] = {}
        for n, path in enumerate(paths):
            rec = found.get(n)
            if rec is None:
                out[path] = None
                continue
            key, enc = rec.key, rec.encoding
            document: dict[str, Any] = {
                "size": key.size, "mtime_ns": key.mtime_ns, "dev": key.dev, "inode": key.inode,
                "digest": enc.digest.hex() if enc else None, "width": enc.width if enc else None,
                "height": enc.height if enc else None, "skip": rec.skip.value if rec.skip else None,
                "root": self.root_of(path), "protected": any(is_under(path, root) for root in protected),
                "capture": asdict(enc.capture) if enc is not None and enc.capture is not None else None,
                "companions": [c.document() for c in companions.get(path, [])],
                "capture_set": paths[sets[n]] if n in sets else None}
            if tokens:
                document["token"] = base64.b64encode(record_token(rec)).decode("ascii")
            out[path] = document
        return out

    def _changed(self, args: dict[str, Any]) -> dict[str, Any]:
        """Look at these files now (a user action moved, replaced or restored them): gone ones leave their
        groups, present ones are settled as closed files. Paths outside the roots are left alone."""
        assert self.pipeline is not None
        seen = []
        for path in args["paths"]:
            root = self.root_of(path)
            if root is None:
                continue
            kind = ChangeKind.CLOSED if os.path.lexists(path) else ChangeKind.DELETED
            self.pipeline.on_change(Change(kind, path, root, reason="user action"))
            seen.append(path)
        return {"changed": seen}

    def _expect(self, args: dict[str, Any]) -> dict[str, Any]:
        """Files an undo is about to put back: indexed from their tokens when they arrive unchanged, not decoded
        (a file that was skipped keeps its skip reason)."""
        assert self.pipeline is not None
        records = []
        for item in args["records"]:
            if self.root_of(item["path"]) is None:
                raise ProtocolError("bad_args", f"{item['path']} is not under a watched root")
            try:
                rec = record_from_token(base64.b64decode(item["token"], validate=True))
            except (ValueError, StoreError) as exc:
                raise ProtocolError("bad_args", f"expect: bad token for {item['path']}: {exc}") from None
            records.append(replace(rec, key=replace(rec.key, path=item["path"], size=item["size"],
                                                    mtime_ns=item["mtime_ns"])))
        self.pipeline.expect(records)
        return {"expected": len(records)}


def _not_a(kind: str, path: str, hint: str) -> str:
    """`no such file: P`, or what P is instead of a `kind` (and which verb takes that)."""
    if not os.path.exists(path):
        return f"no such {kind}: {path}"
    if not os.path.isdir(path) and not os.path.isfile(path):  # a FIFO, a device, a socket
        return f"{path} is not a regular file" if kind == "file" else f"{path} is not a directory"
    return f"{path} is {'a directory' if os.path.isdir(path) else 'a file'}, not a {kind} ({hint})"


def _without_path(document: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in document.items() if key != "path"}


def _group_document(group: Group) -> list[dict[str, Any]]:
    """A group as `duplicates` lists it: each member with its strongest match inside the group."""
    best: dict[str, Match] = {}
    for path, match in group.links:
        for mine, other in ((path, match), (match.path, replace(match, path=path))):
            if mine not in best or _stronger(other, best[mine]):
                best[mine] = other
    return [{"path": path, **_without_path(match_document(best[path]))} if path in best else {"path": path}
            for path in group.paths]


def _stronger(a: Match, b: Match) -> bool:
    """The matcher's evidence order (exact, smaller distance, higher similarity) for reported matches."""
    return _rank(a) < _rank(b)


def _rank(match: Match) -> tuple[int, float]:
    score = match.similarity if match.similarity is not None else float(match.distance or 0)
    return evidence_rank(match.method, score)


def run(config_path: Path | None, *, before_commit: Callable[[list[str]], object] | None = None) -> int:
    """Entry point of `dedupd run`: 0 after a clean stop, 1 with one clear line on a startup error.
    `before_commit`: passed to the pipeline (see `Pipeline`)."""
    try:
        settings = load_settings(config_path)
    except DedupdError as exc:
        print(f"dedupd: {exc}", file=sys.stderr)
        return 1
    configure_logging(settings.log_level)
    note = sandbox_note()
    if note is not None:
        log.info("%s", note)
    try:
        return Daemon(settings, config_path, before_commit=before_commit).run()
    except DedupdError as exc:
        log.error("%s", exc)
        print(f"dedupd: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"dedupd: {exc}", file=sys.stderr)
        return 1
