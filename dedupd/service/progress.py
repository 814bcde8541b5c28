"""What the daemon says about its work: scan progress in images (with a rate and an estimate) and each burst
of duplicates, once, at INFO.

A scan's progress counts images, not walked paths: `done` is the files finished since the scan began (the
pipeline's commit counter), `total` is `done` plus the files still waiting (settling, queued, decoding);
while the walk is still finding files, `total` can grow and the estimate is a lower bound. The same numbers
feed `dedupctl status`, the systemd STATUS= line and the log. Pure bookkeeping over numbers the caller
passes in (and a clock), so it is tested without a daemon.
"""

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dedupd.records import Match
from dedupd.service.notify import Batch, Burst

log = logging.getLogger(__name__)

#: How often the log says how a running scan is doing.
PROGRESS_LOG_INTERVAL_S = 30.0
#: Duplicates committed less than this apart are one burst (as the desktop notification groups them).
BURST_GAP_S = 10.0


def _seconds(value: float) -> str:
    whole = round(value)
    if whole < 90:
        return f"{whole} s"
    if whole < 5400:
        return f"{round(whole / 60)} min"
    return f"{whole / 3600:.1f} h"


@dataclass(frozen=True, slots=True)
class Progress:
    """One scan's progress in images."""

    done: int
    total: int
    walking: bool  # the walk is still finding files: `total` may grow
    elapsed_s: float

    @property
    def rate(self) -> float | None:
        """Images encoded per second since the scan began (None until there is something to divide)."""
        return self.done / self.elapsed_s if self.done and self.elapsed_s >= 1.0 else None

    @property
    def eta_s(self) -> float | None:
        rate = self.rate
        return (self.total - self.done) / rate if rate else None

    def text(self) -> str:
        """`120 of 470 images, 35.2/s, about 10 s left` (`470+` and "at least" while the walk goes on)."""
        parts = [f"{self.done:,} of {self.total:,}{'+' if self.walking else ''} images"]
        if self.rate is not None:
            parts.append(f"{self.rate:.1f}/s")
        if self.eta_s is not None:
            parts.append(f"{'at least ' if self.walking else 'about '}{_seconds(self.eta_s)} left")
        return ", ".join(parts)

    def document(self) -> dict[str, Any]:
        """For `status`'s `scan` object."""
        rate, eta = self.rate, self.eta_s
        return {"done": self.done, "total": self.total, "walking": self.walking,
                "rate": None if rate is None else round(rate, 2), "eta_s": None if eta is None else round(eta, 1),
                "elapsed_s": round(self.elapsed_s, 1), "summary": self.text()}


class ScanProgress:
    """Follows scans as the daemon's state goes scanning -> running: what one is at, and the one that ended."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._started: float | None = None
        self._finished_at_start = 0
        self._last: Progress | None = None
        self._logged_at = 0.0
        self.scans_done = 0
        self._lock = threading.Lock()

    def begin(self, finished: int) -> None:
        """A scan starts now (the first one, at start): followed even if it ends before the next `observe`."""
        with self._lock:
            if self._started is None:
                self._started, self._finished_at_start, self._logged_at = self._clock(), finished, self._clock()

    def observe(self, scanning: bool, finished: int, pending: int, walking: bool) -> Progress | None:
        """The current scan's progress (None when none runs); logs every PROGRESS_LOG_INTERVAL_S, and once
        when a scan ends ("first scan done: ..." for the first)."""
        now = self._clock()
        with self._lock:
            if scanning and self._started is None:
                self._started, self._finished_at_start, self._logged_at = now, finished, now
            if self._started is None:
                return None
            done = max(0, finished - self._finished_at_start)
            progress = Progress(done, done + (pending if scanning else 0), walking and scanning, now - self._started)
            if scanning:
                self._last = progress
                if now - self._logged_at >= PROGRESS_LOG_INTERVAL_S:
                    self._logged_at = now
                    log.info("scanning: %s", progress.text())
                return progress
            self._started, self._last = None, None
            self.scans_done += 1
            rate = f" ({progress.rate:.1f} images/s)" if progress.rate is not None else ""
            log.info("%s done: %s images encoded in %s%s", "first scan" if self.scans_done == 1 else "scan",
                     f"{progress.done:,}", _seconds(progress.elapsed_s), rate)
            return None

    def last(self) -> Progress | None:
        with self._lock:
            return self._last


class DuplicateLog:
    """Logs each burst of duplicates once at INFO, with its counts and an example, when the burst is over."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, gap_s: float = BURST_GAP_S) -> None:
        self._clock = clock
        self._gap_s = gap_s
        self._burst: Burst | None = None
        self._lock = threading.Lock()

    def record(self, added: Sequence[str], duplicates: Mapping[str, Sequence[Match]],
               reports: Mapping[str, Path]) -> None:
        """One committed batch (the pipeline's `on_batch`)."""
        batch = Batch.of(self._clock(), added, duplicates, reports)
        if batch is None:
            return
        with self._lock:
            if self._burst is None:
                self._burst = Burst(last_batch_at=batch.at)
            self._burst.absorb(batch)

    def flush(self, *, force: bool = False) -> None:
        """Log the burst if it is over (no batch for `gap_s`), or now with `force` (at stop)."""
        with self._lock:
            burst = self._burst
            if burst is None or not force and self._clock() - burst.last_batch_at < self._gap_s:
                return
            self._burst = None
        if burst.duplicates:
            log.info("%s", "; ".join(burst.describe(str)))
