"""The prober: asks whether a root answers, from a helper thread, so a hung network mount cannot hang the
caller (the daemon's health check)."""

from __future__ import annotations

import os
import stat
import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Probe:
    """What a root looked like when asked: reachable, which directory it is, whether it has any entry."""

    ok: bool
    reason: str = ""
    identity: tuple[int, int] | None = None
    has_entries: bool = False

    @classmethod
    def now(cls, path: str) -> Probe:
        try:
            st = os.stat(path)
            if not stat.S_ISDIR(st.st_mode):
                return cls(False, "the root is not a directory any more")
            with os.scandir(path) as listing:
                has_entries = next(listing, None) is not None
        except OSError as exc:
            return cls(False, f"cannot read the root: {exc.strerror}")
        return cls(True, identity=(st.st_dev, st.st_ino), has_entries=has_entries)


class Prober:
    """Probes a root on a helper thread, so a hung network mount cannot hang the caller; one probe at a time."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._thread: threading.Thread | None = None
        self._result = Probe(False, "not probed yet")
        self._since = 0.0

    def begin(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return  # still stuck in the kernel: result() says so
        self._since = time.monotonic()
        self._thread = threading.Thread(target=self._run, name=f"dedupd-probe {self._path}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self._result = Probe.now(self._path)

    def result(self, deadline: float) -> Probe:
        assert self._thread is not None
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            return Probe(False, f"the root has not answered for {time.monotonic() - self._since:.0f} s")
        return self._result
