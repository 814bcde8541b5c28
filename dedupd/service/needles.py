"""`needles DIR` as a job: which images of a folder (an old backup, a card dump) are already in the library.

Owns the job's walk and bookkeeping. Files are decoded in the daemon's one encode pool (regular files
only, the size cap, the decode timeout: a FIFO, a `/dev/zero` link or a huge non-image cost the worker
at most one file, never the daemon), several at a time, and embedded in batches. A file the library
already holds unchanged is not decoded at all: it is matched by its path, so pairs the user ignored stay
out. A whole old backup takes longer than one control request may (120 s), so the request starts a job
and waits for it a while; a job not done by then is answered with its progress and its id, which the
client polls (`dedupctl needles` does). Why a job and not a stream of replies: every exchange stays one
short request, as the control server and its client slots and timeouts expect, and a client that goes
away costs nothing more than the job it started.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, wait
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

from dedupd.encodepool import Outcome
from dedupd.errors import Skipped
from dedupd.imaging.encode import EncodedFile
from dedupd.pathnames import is_under
from dedupd.records import Encoding, Match
from dedupd.watch import RootSpec, scan

log = logging.getLogger(__name__)

#: Jobs running at once; one more is refused (each keeps `in_flight` files in the pool).
MAX_JOBS = 2
#: A finished job's result is kept this long for its client to fetch.
KEEP_DONE_S = 600.0


@dataclass(slots=True)
class _Job:
    directory: str
    done: threading.Event = field(default_factory=threading.Event)
    checked: int = 0
    total: int = 0
    result: dict[str, Any] | None = None
    error: str | None = None
    finished_at: float = 0.0


@dataclass(frozen=True, slots=True)
class NeedleTools:
    """What a job needs from the daemon."""

    encode: Callable[[str], Future[Outcome]]  # the encode pool's request path
    embed: Callable[[list[EncodedFile]], list[Encoding]]  # encodings with their CNN embeddings
    matches: Callable[[Encoding | str], list[Match]]  # the duplicate rule against the library
    indexed: Callable[[str], bool]  # stored and unchanged on disk: match by path, no decode
    in_flight: int  # files in the pool at once per job
    wait_s: float  # longest wait for one outcome before the file counts as skipped


class NeedleJobs:
    """The running and recently finished needles jobs."""

    def __init__(self, tools: NeedleTools) -> None:
        self._tools = tools
        self._jobs: dict[str, _Job] = {}
        self._lock = threading.Lock()

    def start(self, directory: str) -> str:
        """Start a job over `directory`; returns its id. Raises RuntimeError when MAX_JOBS are running."""
        with self._lock:
            now = time.monotonic()
            stale = [j for j, job in self._jobs.items() if job.done.is_set() and now - job.finished_at > KEEP_DONE_S]
            for job_id in stale:
                del self._jobs[job_id]
            if sum(not job.done.is_set() for job in self._jobs.values()) >= MAX_JOBS:
                raise RuntimeError(f"{MAX_JOBS} needles jobs are running; try again when one is done")
            job_id = secrets.token_hex(8)
            job = self._jobs[job_id] = _Job(directory)
        threading.Thread(target=self._run, args=(job,), name=f"dedupd-needles-{job_id}", daemon=True).start()
        return job_id

    def poll(self, job_id: str, wait_s: float) -> dict[str, Any]:
        """The job's result once done (the job is then forgotten), else its progress; waits up to `wait_s`."""
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise KeyError(job_id)
        if not job.done.wait(wait_s):
            return {"job": job_id, "done": False, "dir": job.directory, "checked": job.checked, "total": job.total}
        with self._lock:
            self._jobs.pop(job_id, None)
        if job.error is not None:
            raise RuntimeError(job.error)
        assert job.result is not None
        return {**job.result, "done": True}

    # ------------------------------------------------------------------ the job
    def _run(self, job: _Job) -> None:
        try:
            job.result = self._needles(job)
        except Exception as exc:  # noqa: BLE001 - a failed job is answered, the daemon goes on
            log.exception("needles job over %s failed", job.directory)
            job.error = f"needles failed: {type(exc).__name__}: {exc}"
        finally:
            job.finished_at = time.monotonic()
            job.done.set()

    def _needles(self, job: _Job) -> dict[str, Any]:
        tools = self._tools
        paths = sorted(_images(job.directory))
        job.total = len(paths)
        found: dict[str, list[Match]] = {}
        skipped: dict[str, str] = {}  # path -> why it was not compared (said in the reply, never dropped)
        pending: dict[Future[Outcome], str] = {}
        decoded: list[tuple[str, EncodedFile]] = []
        for path in paths:
            if tools.indexed(path):
                found[path] = tools.matches(path)
                job.checked += 1
                continue
            pending[tools.encode(path)] = path
            while len(pending) >= tools.in_flight:
                skipped |= self._collect(pending, decoded, job)
            if len(decoded) >= tools.in_flight:
                self._match(decoded, found)
        while pending:
            skipped |= self._collect(pending, decoded, job)
        self._match(decoded, found)
        return _document(job.directory, found, skipped)

    def _collect(self, pending: dict[Future[Outcome], str], decoded: list[tuple[str, EncodedFile]],
                 job: _Job) -> dict[str, str]:
        """Take the outcomes that are ready (waiting for one at least); returns the skipped ones and why."""
        ready, _ = wait(list(pending), timeout=self._tools.wait_s, return_when="FIRST_COMPLETED")
        if not ready:  # the pool is stuck beyond its own timeouts: give up on these files
            log.warning("needles: no outcome for %d files within %g s", len(pending), self._tools.wait_s)
            ready = set(pending)
        skipped: dict[str, str] = {}
        for future in ready:
            path = pending.pop(future)
            job.checked += 1
            try:
                outcome = future.result(timeout=0)
            except (FutureTimeout, RuntimeError) as exc:
                skipped[path] = f"no outcome ({type(exc).__name__})"
                continue
            if isinstance(outcome, EncodedFile):
                decoded.append((path, outcome))
            elif isinstance(outcome, Skipped):  # (a request knows no digest: never SameContent)
                skipped[path] = outcome.reason.value + (f": {outcome.detail}" if outcome.detail else "")
        return skipped

    def _match(self, decoded: list[tuple[str, EncodedFile]], found: dict[str, list[Match]]) -> None:
        if not decoded:
            return
        encodings = self._tools.embed([encoded for _, encoded in decoded])
        for (path, _), encoding in zip(decoded, encodings, strict=True):
            found[path] = self._tools.matches(encoding)
        decoded.clear()


def _images(directory: str) -> Iterator[str]:
    """Regular files below `directory` (also through a symlink), walked as the daemon walks a root
    (`dedupd.watch.scan`: hidden names and the default excludes such as `@eaDir` left out); nothing when
    `directory` cannot be listed."""
    try:
        spec = RootSpec(os.path.abspath(directory), follow_symlinks=True)
        yield from (path for path, _ in scan(spec, lambda _d, _e: None))
    except OSError:
        return


def _document(directory: str, found: dict[str, list[Match]], skipped: dict[str, str]) -> dict[str, Any]:
    """The reply: each file's matches outside DIR, and per folder how many of its images are in the library."""
    files: dict[str, list[Match]] = {}
    folders: dict[str, list[int]] = {}
    for path in sorted(found):
        outside = [m for m in found[path] if not is_under(m.path, directory)]
        files[path] = outside
        folder = os.path.dirname(path)
        while True:
            counts = folders.setdefault(folder, [0, 0])
            counts[0] += 1
            counts[1] += bool(outside)
            if folder.rstrip("/") == directory.rstrip("/") or folder == os.path.dirname(folder):
                break
            folder = os.path.dirname(folder)
    return {
        "files": files,
        "found": sum(1 for matches in files.values() if matches),
        "total": len(files),
        "skipped": len(skipped),
        "unreadable": dict(sorted(skipped.items())),
        "folders": [{"path": f, "images": n, "in_library": hit, "all": n == hit}
                    for f, (n, hit) in sorted(folders.items())],
    }
