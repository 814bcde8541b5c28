"""The encode worker pool: `encode_path` (or another per-file job) in separate processes, one file per worker at a time.

Owns the worker processes that decode files: the daemon's pipeline (DESIGN.md data flow step 3; requirements 15,
19), `dedupd scan`, `query` and `needles`, the review page's thumbnails and the imagededup facade's encoders.
A file whose decoder hangs or crashes costs that one file, never the pipeline: a worker still busy after
`timeout_s` is SIGKILLed and the file becomes `Skipped(DECODE_TIMEOUT)`; a worker that dies mid-file
(segfault, abort, `os._exit`, OOM kill) makes it `Skipped(DECODER_CRASH)`; either way a fresh worker takes
its place and the other files keep flowing. A worker stopped from outside (SIGTERM, SIGHUP: a service
manager or terminal signalling the whole group) is not the file's fault: the file is retried once
instead of being remembered as broken. Each worker also arms an alarm per file (`timeout_s` plus a grace;
SIGALRM's default action ends the process), so a worker orphaned by a dead daemon cannot hang forever.

Workers are started with the `spawn` context (fork + exec of a fresh interpreter, only their pipe's fd
passed on), so they never inherit the daemon's LMDB environment, ONNX sessions, threads or locks. Each
worker lives for many files: the start cost (~0.5 s of imports) is paid at pool start and after a crash or
timeout, never per file. With `idle_stop_s` the pool starts no worker until there is work (then as many
as there are tasks in flight, up to `workers`) and stops them all once nothing was in flight for that
long: an idle daemon holds no worker (~70 MiB each: the decoders and numpy), and the next file pays the
start cost once. Without it (`dedupd scan`, which has work from the start) all workers start with the pool.
Not `forkserver`: its server stands between the pool and the workers, and when a group-wide SIGTERM kills it
before it has reported a worker's death, that worker's exit status reads 255, so a crash could not be told
from a stop. Not `concurrent.futures`: it cannot kill a hung task.

One supervisor thread owns every worker. It hands queued files to idle workers, watches their pipes, exit
sentinels and deadlines in one `multiprocessing.connection.wait`, and calls `on_result` for each outcome.

Besides encodings, a worker runs requests (`encode`, `thumbnail`, `run`) and ordered batches (`imap`) of any
picklable per-file job (a module-level function or a `functools.partial` of one), under the same isolation.
"""

import atexit
import logging
import math
import multiprocessing
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from functools import partial
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import TracebackType
from typing import Any, Self, cast
from weakref import WeakSet

from dedupd.errors import Skipped, SkipReason
from dedupd.imaging.cnn import ModelSpec
from dedupd.imaging.decode import DEFAULT_MAX_PIXELS
from dedupd.imaging.encode import DEFAULT_MAX_FILE_SIZE, EncodedFile, content_digest, encode_bytes, read_file
from dedupd.imaging.thumbnail import Thumbnail, make_thumbnail
from dedupd.memory import release_free_memory

log = logging.getLogger(__name__)

@dataclass(frozen=True, slots=True)
class SameContent:
    """The file still has the digest its submitter knew (a touch, a copy of the same bytes): read, not decoded."""

    digest: bytes


type Outcome = EncodedFile | Skipped | SameContent
#: A per-file job a worker runs instead of encoding: picklable, takes the path, raises `Skipped` for a bad file.
type Job[R] = Callable[[str], R]

#: A worker that has not finished importing by then is killed and counted as a start failure.
STARTUP_TIMEOUT_S = 60.0
#: A file whose decode takes longer than this is skipped as a timeout and its worker replaced.
DEFAULT_DECODE_TIMEOUT_S = 30.0

class WorkersCannotStart(RuntimeError):
    """A pool's workers failed to start `start_attempts` times in a row: the pool closed."""


#: Longest pause between attempts to start a worker after failed starts (they back off from 0.5 s).
MAX_START_BACKOFF_S = 30.0

#: A worker still on one file this long after `timeout_s` kills itself (SIGALRM), pool or no pool.
SELF_DESTRUCT_GRACE_S = 2

#: A worker that gets no next file this long after its last gives its freed heap back (`release_free_memory`).
#: Not after every file: a trim hands the decode buffers to the kernel and the next file faults them in again
#: (ukbench-transformed, one process: +15-25% CPU a file, almost all of it system time; BENCHMARKS.md "Tiers").
IDLE_TRIM_S = 1.0

#: How long an idle worker that was hung up on may take to exit before it is SIGKILLed.
STOP_GRACE_S = 5.0

#: Exit codes of workers stopped from outside, by a signal that says nothing about the file in hand.
_STOPPED_FROM_OUTSIDE = frozenset(-sig for sig in (signal.SIGTERM, signal.SIGHUP))

#: How often a file is retried after its worker was stopped from outside, before it counts as a crash.
_MAX_RETRIES = 1

_READY = "ready"  # a worker's first message: imports done, waiting for files

_CONTEXT = multiprocessing.get_context("spawn")


# --------------------------------------------------------------------------------------------------------
# Worker side


def _encode_outcome(
    path: str, known: bytes | None, *, cnn_spec: ModelSpec | None, max_pixels: int, max_bytes: int,
    job: Job[Any] | None = None,
) -> Any:
    """`encode_path` (or, for a job task, `job(path)`), with every exception turned into a Skip: a task
    always has exactly one outcome. When the bytes still have the `known` digest, SameContent instead,
    without decoding.

    The Skip returned is a fresh one: the raised one's traceback holds the decoder's frames, and with them
    the file's bytes, for as long as the outcome lives."""
    try:
        if job is not None:
            return job(path)
        data = read_file(path, max_bytes)
        if known is not None and content_digest(data) == known:
            return SameContent(known)
        return encode_bytes(data, cnn_spec=cnn_spec, max_pixels=max_pixels)
    except Skipped as skip:
        return Skipped(skip.reason, skip.detail)
    except Exception as exc:  # noqa: BLE001 - an encoder bug must cost one file, not the worker
        log.exception("unexpected error encoding %s", path)
        return Skipped(SkipReason.DECODE_ERROR, f"{type(exc).__name__}: {exc}")


def _worker_main(
    conn: Connection, cnn_spec: ModelSpec | None, max_pixels: int, max_bytes: int, timeout_s: float
) -> None:
    """A worker's life: announce readiness, then encode one path per message until the pool hangs up."""
    # ^C in a terminal reaches the whole process group; the daemon handles it by closing the pool.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The kernel's kill switch, even for a decoder spinning in C with the GIL held: an alarm at SIGALRM's
    # default action ends a worker stuck on one file after the pool itself has died.
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    self_destruct_s = math.ceil(timeout_s) + SELF_DESTRUCT_GRACE_S
    try:
        conn.send(_READY)
        while True:
            path, known, job = conn.recv()
            signal.alarm(self_destruct_s)
            outcome = _encode_outcome(path, known, cnn_spec=cnn_spec, max_pixels=max_pixels, max_bytes=max_bytes,
                                      job=job)
            signal.alarm(0)
            conn.send(outcome)
            del outcome  # its tensors must not outlive the file while the worker waits for the next
            if not conn.poll(IDLE_TRIM_S):  # no next file for a while: an idle worker gives the decode buffers back
                release_free_memory()
    except (EOFError, BrokenPipeError):
        return  # the pool closed its end (or died): nothing left to do


# --------------------------------------------------------------------------------------------------------
# Pool side


def _describe_exit(exitcode: int | None) -> str:
    """'killed by SIGSEGV' / 'exited with code 3', for Skip details and logs."""
    if exitcode is None:
        return "vanished"
    if exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exited with code {exitcode}"


@dataclass(eq=False, slots=True)
class _Task[T]:
    token: T
    path: str
    retries: int = 0  # times its worker was stopped from outside while on it
    # A request (`encode()`, `thumbnail()`, `run()`, `imap()`): the outcome goes here, not to on_result.
    future: "Future[Any] | None" = None
    job: Job[Any] | None = None  # run instead of encoding
    known: bytes | None = None  # the digest the submitter knows: same bytes -> SameContent, no decode


@dataclass(eq=False, slots=True)
class _Worker[T]:
    process: BaseProcess
    conn: Connection
    deadline: float  # time.monotonic() by which it must be ready, or done with `task`
    ready: bool = False
    task: _Task[T] | None = None


#: Pools to close at interpreter exit, before multiprocessing's own exit handler joins their workers.
_LIVE_POOLS: "WeakSet[EncodePool[Any]]" = WeakSet()


@atexit.register
def _close_live_pools() -> None:
    for pool in list(_LIVE_POOLS):
        pool.close()


class EncodePool[T]:
    """Encodes files in `workers` processes; every submitted `(token, path)` yields exactly one outcome.

    Outcomes (an `EncodedFile` or a `Skipped`) go to `on_result(token, outcome)`, always called from the
    pool's one supervisor thread, in completion order. The callback must return reasonably fast (it holds
    up the hand-out of further files) and must not call `submit` (it would wait on itself); an exception
    it raises is logged and the pool carries on. At most `max_pending` tasks are in flight (submitted,
    outcome not yet delivered): `submit` blocks beyond that, which bounds memory and pushes back on the
    producer. `close()` abandons what is still queued or running: those tasks get no outcome.

    Workers that fail to start are retried with back-off for ever; with `start_attempts`, that many failed
    starts in a row close the pool instead, and its requests fail with `WorkersCannotStart` (for a caller that
    would rather fail than wait: the imagededup facade in a script without the `__main__` guard).
    """

    def __init__(
        self,
        workers: int,
        on_result: Callable[[T, Outcome], object],
        *,
        timeout_s: float = DEFAULT_DECODE_TIMEOUT_S,
        cnn_spec: ModelSpec | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_bytes: int = DEFAULT_MAX_FILE_SIZE,
        max_pending: int | None = None,
        idle_stop_s: float | None = None,
        start_attempts: int | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        if idle_stop_s is not None and idle_stop_s <= 0:
            raise ValueError(f"idle_stop_s must be > 0 or None, got {idle_stop_s}")
        if start_attempts is not None and start_attempts < 1:
            raise ValueError(f"start_attempts must be >= 1 or None, got {start_attempts}")
        self._idle_stop_s = idle_stop_s
        self._start_attempts = start_attempts
        self._closed_by: WorkersCannotStart | None = None  # why the pool closed itself
        self._size = workers
        self._on_result = on_result
        self._timeout_s = timeout_s
        self._cnn_spec = cnn_spec
        self._max_pixels = max_pixels
        self._max_bytes = max_bytes
        self._max_pending = 2 * workers if max_pending is None else max_pending
        if self._max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {self._max_pending}")
        # Guards everything below that other threads read or write. The worker list is changed only by
        # the supervisor (and by start() before the supervisor exists), under this lock for stats().
        self._cond = threading.Condition()
        self._state = "new"  # -> "running" -> "closed"
        self._queue: deque[_Task[T]] = deque()
        self._in_flight = 0
        self._counts = dict.fromkeys(
            ("encoded", "skipped", "same", "timeouts", "crashes", "retries", "restarts", "start_failures",
             "abandoned", "idle_stops"), 0
        )
        self._last_busy = time.monotonic()  # when a task was last in flight (for idle_stop_s)
        self._workers: list[_Worker[T]] = []
        self._wake_r = self._wake_w = -1
        self._thread: threading.Thread | None = None
        self._failed_starts_in_a_row = 0
        self._next_start_at = 0.0
        self._to_replace = 0  # workers lost to a crash, timeout or failed start: their successors are restarts

    # --- public interface -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the workers and the supervisor; errors starting the first workers raise here (with
        `idle_stop_s`, workers start with the first task, and a failed start is retried with back-off)."""
        with self._cond:
            if self._state != "new":
                raise RuntimeError(f"encode pool cannot start: it is {self._state}")
            self._state = "running"
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        _LIVE_POOLS.add(self)
        try:
            for _ in range(self._size if self._idle_stop_s is None else 0):
                self._add_worker()
        except BaseException:
            self._shutdown()
            raise
        self._thread = threading.Thread(target=self._supervise, name="dedupd-encode-pool", daemon=True)
        self._thread.start()

    def submit(self, token: T, path: str | os.PathLike[str], known_digest: bytes | None = None) -> None:
        """Queue `path`; blocks while `max_pending` tasks are in flight. Raises RuntimeError once closed.
        With `known_digest`, a file whose bytes still have it is not decoded: its outcome is SameContent."""
        with self._cond:
            while self._state == "running" and self._in_flight >= self._max_pending:
                if threading.current_thread() is self._thread:
                    raise RuntimeError("submit() from on_result would wait for itself")
                self._cond.wait()
            if self._state != "running":
                raise self._not_running()
            self._in_flight += 1
            self._last_busy = time.monotonic()
            self._queue.append(_Task(token, os.fspath(path), known=known_digest))
            self._wake()

    def encode(self, path: str | os.PathLike[str]) -> "Future[Outcome]":
        """Encode one file for a request (`query`, `needles`) with the same isolation, its outcome in the
        returned future rather than `on_result`. Queued ahead of submitted files and never blocks, so a
        request waits for at most the files the workers already hold; the caller bounds how many it has in
        flight. A pool that closes first fails the future with RuntimeError."""
        return self._request(path, None)

    def thumbnail(self, path: str | os.PathLike[str], size: int) -> "Future[Thumbnail | Skipped]":
        """A `Thumbnail` of one file fitting `size` px (the review page's), as `encode` runs a request."""
        return self.run(partial(make_thumbnail, size=size, max_pixels=self._max_pixels), path)

    def run[R](self, job: Job[R], path: str | os.PathLike[str]) -> "Future[R | Skipped]":
        """`job(path)` in a worker, as `encode` runs a request: a `Skipped` it raises, an exception, a crash
        or a timeout of the worker is the future's `Skipped`. `job` must pickle (a module-level function or
        a partial of one)."""
        return self._request(path, job)

    def imap[R](self, job: Job[R], paths: Iterable[str | os.PathLike[str]]) -> Iterator[R | Skipped]:
        """`run(job, path)` for each path, outcomes in input order, at most `max_pending` files in flight.
        Ending the iteration early leaves the files still in flight to finish unseen."""
        window: deque[Future[R | Skipped]] = deque()
        for path in paths:
            window.append(self.run(job, path))
            if len(window) >= self._max_pending:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()

    def _request(self, path: str | os.PathLike[str], job: Job[Any] | None) -> "Future[Any]":
        future: Future[Any] = Future()
        with self._cond:
            if self._state != "running":
                raise self._not_running()
            self._in_flight += 1
            self._last_busy = time.monotonic()
            self._queue.appendleft(_Task(cast(T, None), os.fspath(path), future=future, job=job))
            self._wake()
        return future

    def _not_running(self) -> RuntimeError:
        if self._closed_by is not None:
            return WorkersCannotStart(str(self._closed_by))
        return RuntimeError(f"encode pool is {self._state}")

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until no task is in flight (or the pool closed); True when nothing is in flight."""
        with self._cond:
            self._cond.wait_for(lambda: self._in_flight == 0 or self._state == "closed", timeout)
            return self._in_flight == 0

    def close(self) -> None:
        """Kill the workers and stop the supervisor; queued and running tasks are abandoned. Idempotent.

        Returns once no worker process is left, unless called from `on_result` (the supervisor then
        finishes the shutdown right after the callback returns).
        """
        with self._cond:
            never_started = self._state == "new"
            self._state = "closed"
            self._cond.notify_all()
            if self._wake_w >= 0:
                self._wake()
        if never_started:
            return
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def stats(self) -> dict[str, int]:
        """Counters for `status`: decodes (= encoded + skipped, timeouts and crashes included), encoded,
        skipped, same (read, not decoded: SameContent), timeouts, crashes, retries (files put back after
        their worker was stopped from outside), restarts (workers started to replace one), start_failures,
        abandoned (tasks dropped by close), idle_stops (times the workers were stopped for idleness),
        in_flight, queued, workers (live processes)."""
        with self._cond:
            return {
                "decodes": self._counts["encoded"] + self._counts["skipped"],
                **self._counts,
                "in_flight": self._in_flight,
                "queued": len(self._queue),
                "workers": len(self._workers),
            }

    def worker_pids(self) -> list[int]:
        """Process ids of the live workers (diagnostics and tests)."""
        with self._cond:
            return [pid for worker in self._workers if (pid := worker.process.pid) is not None]

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- supervisor -------------------------------------------------------------------------------------

    def _wake(self) -> None:
        """Interrupt the supervisor's wait (caller holds the lock, so the pipe is open)."""
        try:
            os.write(self._wake_w, b"\0")
        except BlockingIOError:
            pass  # the pipe is full of earlier wake-ups: the supervisor will look anyway

    def _supervise(self) -> None:
        try:
            while self._step():
                pass
        except Exception:
            log.exception("encode pool supervisor failed: encoding stops")
        finally:
            self._shutdown()

    def _step(self) -> bool:
        """One round: replace missing workers, hand out files, wait for something, react to it."""
        with self._cond:
            if self._state == "closed":
                return False
        now = time.monotonic()
        self._replace_missing_workers(now)
        self._dispatch(now)
        conns = {worker.conn: worker for worker in self._workers}
        sentinels = {worker.process.sentinel: worker for worker in self._workers}
        ready = wait([self._wake_r, *conns, *sentinels], timeout=self._wait_timeout(now))
        if self._wake_r in ready:
            os.read(self._wake_r, 4096)
        for conn in ready:
            if conn in conns:  # read results first: a worker may answer and then die
                self._receive(conns[conn])
        for sentinel in ready:
            if sentinel in sentinels and sentinels[sentinel] in self._workers:
                self._on_death(sentinels[sentinel])
        now = time.monotonic()
        for worker in [w for w in self._workers if now >= w.deadline]:
            self._on_deadline(worker, now)
        if (idle_at := self._idle_at()) is not None and now >= idle_at:
            self._stop_idle_workers()
        return True

    def _wanted(self) -> int:
        """How many workers the pool should have running now: all of them, or with `idle_stop_s` one per
        task in flight (up to all); workers beyond that are kept until the pool has been idle long enough."""
        if self._idle_stop_s is None:
            return self._size
        with self._cond:
            return min(self._size, self._in_flight)

    def _idle_at(self) -> float | None:
        """When the live workers are to be stopped for idleness, or None (no idle stop, or work in flight)."""
        if self._idle_stop_s is None or not self._workers:
            return None
        with self._cond:
            return None if self._in_flight else self._last_busy + self._idle_stop_s

    def _stop_idle_workers(self) -> None:
        """Stop every worker (none holds a file): hang up, so each returns from its loop, then reap it."""
        log.debug("encode pool idle for %g s: stopping %d workers", self._idle_stop_s, len(self._workers))
        with self._cond:  # counted first: whoever sees no worker left also sees the stop counted
            self._counts["idle_stops"] += 1
        for worker in list(self._workers):
            worker.conn.close()
            worker.process.join(STOP_GRACE_S)
            if worker.process.exitcode is None:
                worker.process.kill()
                worker.process.join()
            with self._cond:
                self._workers.remove(worker)
        self._to_replace = 0

    def _wait_timeout(self, now: float) -> float | None:
        deadlines = [worker.deadline for worker in self._workers]
        if len(self._workers) < self._wanted():
            deadlines.append(self._next_start_at)
        if (idle_at := self._idle_at()) is not None:
            deadlines.append(idle_at)
        soonest = min(deadlines, default=math.inf)
        return None if soonest == math.inf else max(0.0, soonest - now)

    def _add_worker(self) -> None:
        parent_conn, child_conn = _CONTEXT.Pipe()
        process = _CONTEXT.Process(
            target=_worker_main,
            args=(child_conn, self._cnn_spec, self._max_pixels, self._max_bytes, self._timeout_s),
            name="dedupd-encode-worker",
            daemon=True,
        )
        try:
            process.start()
        except BaseException:
            parent_conn.close()
            raise
        finally:
            child_conn.close()  # the worker's copy is its own: EOF on ours means it is gone
        worker: _Worker[T] = _Worker(process, parent_conn, deadline=time.monotonic() + STARTUP_TIMEOUT_S)
        with self._cond:
            self._workers.append(worker)

    def _replace_missing_workers(self, now: float) -> None:
        while len(self._workers) < self._wanted() and now >= self._next_start_at:
            try:
                self._add_worker()
            except Exception as exc:  # noqa: BLE001 - e.g. out of fds: retry later, keep the pool up
                self._start_failed(f"{type(exc).__name__}: {exc}", now)
                return
            if self._to_replace:
                self._to_replace -= 1
                with self._cond:
                    self._counts["restarts"] += 1

    def _start_failed(self, detail: str, now: float) -> None:
        """Back off so a worker that cannot start (broken install, bad hook) is not restarted in a loop."""
        if self._closed_by is not None:
            return  # another worker of the round that closed the pool: the reason it gave stands
        self._failed_starts_in_a_row += 1
        delay = min(MAX_START_BACKOFF_S, 0.5 * 2 ** (self._failed_starts_in_a_row - 1))
        self._next_start_at = now + delay
        with self._cond:
            self._counts["start_failures"] += 1
            if self._start_attempts is not None and self._failed_starts_in_a_row >= self._start_attempts:
                self._closed_by = WorkersCannotStart(
                    f"encode workers failed to start {self._failed_starts_in_a_row} times in a row ({detail})")
                self._state = "closed"
                log.error("%s; the pool closes", self._closed_by)
                return
        log.error("encode worker failed to start (%s); next try in %.1f s", detail, delay)

    def _dispatch(self, now: float) -> None:
        for worker in list(self._workers):
            if not worker.ready or worker.task is not None:
                continue
            with self._cond:
                if not self._queue:
                    return
                task = self._queue.popleft()
            try:
                worker.conn.send((task.path, task.known, task.job))
            except OSError:  # it died while idle: the file was never started, so it goes back first
                with self._cond:
                    self._queue.appendleft(task)
                self._on_death(worker)
                continue
            worker.task = task
            worker.deadline = now + self._timeout_s

    def _receive(self, worker: _Worker[T]) -> None:
        try:
            message = worker.conn.recv()
        except (EOFError, OSError):
            self._on_death(worker)  # it died, possibly halfway through sending
            return
        if not worker.ready:
            worker.ready = True
            worker.deadline = math.inf
            self._failed_starts_in_a_row = 0
            return
        task, worker.task, worker.deadline = worker.task, None, math.inf
        if task is not None:
            self._finish(task, message)

    def _on_death(self, worker: _Worker[T]) -> None:
        self._remove(worker)
        exitcode = worker.process.exitcode
        how = _describe_exit(exitcode)
        task = worker.task
        if task is None:
            if worker.ready:
                log.warning("idle encode worker %s; replacing it", how)
            else:
                self._start_failed(f"worker {how}", time.monotonic())
        elif exitcode == -signal.SIGALRM:
            self._timed_out(task)  # its own kill switch went off first
        elif exitcode in _STOPPED_FROM_OUTSIDE and task.retries < _MAX_RETRIES:
            log.warning("encode worker %s while decoding %s; retrying the file", how, task.path)
            task.retries += 1
            with self._cond:
                self._counts["retries"] += 1
                self._queue.appendleft(task)
        else:
            log.warning("encode worker %s while decoding %s", how, task.path)
            with self._cond:
                self._counts["crashes"] += 1
            self._finish(task, Skipped(SkipReason.DECODER_CRASH, f"decoder worker {how}"))

    def _on_deadline(self, worker: _Worker[T], now: float) -> None:
        if worker.conn.poll():
            # It answered while on_result held the supervisor up: a slow consumer is no decoder timeout.
            self._receive(worker)
            return
        self._remove(worker)
        if worker.task is not None:
            self._timed_out(worker.task)
        else:
            self._start_failed(f"not ready after {STARTUP_TIMEOUT_S:g} s", now)

    def _timed_out(self, task: _Task[T]) -> None:
        log.warning("decoding %s took over %g s; worker killed", task.path, self._timeout_s)
        with self._cond:
            self._counts["timeouts"] += 1
        detail = f"no result after {self._timeout_s:g} s; decoder worker killed"
        self._finish(task, Skipped(SkipReason.DECODE_TIMEOUT, detail))

    def _remove(self, worker: _Worker[T]) -> None:
        """SIGKILL (if still running) and reap a worker that failed, and forget it (a successor replaces it)."""
        self._to_replace += 1
        if worker.process.exitcode is None:
            worker.process.kill()
        worker.process.join()
        worker.conn.close()
        with self._cond:
            self._workers.remove(worker)

    def _finish(self, task: _Task[T], outcome: Any) -> None:
        with self._cond:
            kind = "skipped" if isinstance(outcome, Skipped) else "same" if isinstance(outcome, SameContent) \
                else "encoded"
            self._counts[kind] += 1
            self._in_flight -= 1
            self._last_busy = time.monotonic()
            self._cond.notify_all()
        if task.future is not None:
            task.future.set_result(outcome)
            return
        try:
            self._on_result(task.token, outcome)
        except Exception:
            log.exception("encode pool on_result failed for %r", task.token)

    def _shutdown(self) -> None:
        abandoned = [w.task for w in self._workers if w.task is not None]
        for worker in list(self._workers):
            self._remove(worker)
        _LIVE_POOLS.discard(self)
        with self._cond:
            abandoned += self._queue
            for task in abandoned:
                if task.future is not None and not task.future.done():
                    task.future.set_exception(self._closed_by or RuntimeError("encode pool closed"))
            self._state = "closed"
            self._counts["abandoned"] += self._in_flight
            self._in_flight = 0
            self._queue.clear()
            for fd in (self._wake_r, self._wake_w):
                if fd >= 0:
                    os.close(fd)
            self._wake_r = self._wake_w = -1
            self._cond.notify_all()
