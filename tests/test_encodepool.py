"""Encode worker pool (dedupd.encodepool): real worker processes on real image files.

Hangs and crashes come from the test-only decode faults (tests/decode_faults/), chosen by file name.
"""

import io
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import lmdb
import numpy as np
import pytest
from PIL import Image

from dedupd.encodepool import EncodePool, Outcome
from dedupd.errors import Skipped, SkipReason
from dedupd.imaging.cnn import resolve_model
from dedupd.imaging.encode import EncodedFile, encode_path

#: The pool's timeout in the tests of the timeout itself: they last that long. The files that must not time out
#: meanwhile are small generated JPEGs (milliseconds to decode), so even a heavily loaded machine stays far inside it.
SHORT_TIMEOUT_S = 5


class Outcomes:
    """Collects on_result calls (made on the pool's thread) for the test thread to inspect."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.items: list[tuple[str, Outcome]] = []

    def __call__(self, token: str, outcome: Outcome) -> None:
        with self._lock:
            self.items.append((token, outcome))

    def by_token(self) -> dict[str, Outcome]:
        with self._lock:
            tokens = Counter(token for token, _ in self.items)
            assert all(n == 1 for n in tokens.values()), f"outcome delivered twice: {tokens}"
            return dict(self.items)


def small_jpeg(path: Path, seed: int, size: tuple[int, int] = (320, 260)) -> Path:
    """A distinct small photo-like JPEG: smooth colour gradients plus noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0 : size[1], 0 : size[0]]
    base = np.stack([x * rng.uniform(0.2, 0.8), y * rng.uniform(0.2, 0.8), (x + y) * rng.uniform(0.1, 0.4)], -1)
    pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, "JPEG", quality=90)
    return path


@pytest.fixture
def hooked(decode_faults: None) -> None:
    """Workers of pools started in this test run the decode faults."""


@pytest.fixture
def images(tmp_path: Path, photos: list[Path]) -> list[Path]:
    """The real photographs plus a few generated JPEGs, all distinct, all decodable."""
    return list(photos) + [small_jpeg(tmp_path / f"gen{i}.jpg", seed=i) for i in range(6)]


def pids_alive(pids: list[int]) -> list[int]:
    """The pids that still run (a zombie waiting for a non-reaping PID 1 does not count)."""
    alive = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z":
            alive.append(pid)
    return alive


def descendants(pid: int) -> set[int]:
    """Every process below `pid` (workers, the resource tracker, anything else), from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # exited while we looked
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Poll for an event another process causes; the cap only keeps a broken build from hanging the run."""
    for _ in range(3000):
        if condition():
            return
        time.sleep(0.02)
    pytest.fail(f"never happened: {what}")


def started(gate: Path) -> Path:
    """The marker the decode faults create once a worker holds the `gate*` file."""
    return Path(f"{gate}.started")


def release(gate: Path) -> None:
    """Let the worker holding a `gate*` file go on with it."""
    Path(f"{gate}.release").touch()


def open_files(pid: int) -> Iterator[str]:
    """The files `pid` holds open; none once it has exited (a short-lived descendant may go while we look)."""
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except (FileNotFoundError, ProcessLookupError):
        return
    for fd in fds:
        try:
            yield os.readlink(fd)
        except OSError:
            continue


def test_every_file_yields_exactly_one_outcome_matching_in_process_encoding(images: list[Path]) -> None:
    results = Outcomes()
    tokens = {f"t{i}": path for i, path in enumerate(images * 2)}  # the same file twice is two tasks
    with EncodePool[str](2, results, max_pending=3) as pool:
        for token, path in tokens.items():
            pool.submit(token, path)
        assert pool.drain()
        stats = pool.stats()
    got = results.by_token()
    assert got.keys() == tokens.keys()
    for token, path in tokens.items():
        outcome = got[token]
        assert isinstance(outcome, EncodedFile), outcome
        expected = encode_path(path)
        assert outcome.encoding == expected.encoding and outcome.variants == expected.variants
        assert outcome.cnn_input is None
    assert stats["decodes"] == stats["encoded"] == len(tokens)
    assert stats["in_flight"] == stats["timeouts"] == stats["crashes"] == stats["restarts"] == 0


def test_cnn_input_comes_back_intact(images: list[Path]) -> None:
    spec = resolve_model()
    results = Outcomes()
    with EncodePool[str](2, results, cnn_spec=spec) as pool:
        for path in images[:4]:
            pool.submit(str(path), path)
        assert pool.drain()
    for token, outcome in results.by_token().items():
        assert isinstance(outcome, EncodedFile) and outcome.cnn_input is not None
        expected = encode_path(token, cnn_spec=spec).cnn_input
        assert expected is not None
        assert outcome.cnn_input.dtype == expected.dtype and np.array_equal(outcome.cnn_input, expected)


def test_bad_files_get_their_usual_reason(tmp_path: Path, images: list[Path]) -> None:
    whole = io.BytesIO()
    Image.open(images[0]).convert("RGB").save(whole, "JPEG")
    bad = {
        "cut.jpg": whole.getvalue()[: len(whole.getvalue()) // 2],
        "notes.jpg": b"shopping list: milk, eggs\n",
        "empty.png": b"",
    }
    for name, data in bad.items():
        (tmp_path / name).write_bytes(data)
    paths = [tmp_path / name for name in bad] + [tmp_path / "vanished.jpg"]
    results = Outcomes()
    with EncodePool[str](2, results) as pool:
        for path in [*paths, images[1]]:
            pool.submit(path.name, path)
        assert pool.drain()
    got = results.by_token()
    for path in paths:
        with pytest.raises(Skipped) as in_process:
            encode_path(path)
        outcome = got[path.name]
        assert isinstance(outcome, Skipped) and outcome.reason == in_process.value.reason
    assert {got[n].reason for n in ("notes.jpg", "vanished.jpg")} == {  # type: ignore[union-attr]
        SkipReason.UNSUPPORTED_FORMAT,
        SkipReason.VANISHED,
    }
    assert isinstance(got[images[1].name], EncodedFile)


def test_hang_times_out_and_the_pool_keeps_working(tmp_path: Path, images: list[Path], hooked: None) -> None:
    hang = Path(shutil.copy(images[0], tmp_path / "hang.jpg"))
    small = [small_jpeg(tmp_path / f"small{i}.jpg", seed=100 + i) for i in range(8)]
    results = Outcomes()
    with EncodePool[str](2, results, timeout_s=SHORT_TIMEOUT_S) as pool:
        pool.submit("hang", hang)
        for path in small[:5]:
            pool.submit(path.name, path)
        assert pool.drain()
        for path in small[5:]:  # after the replacement
            pool.submit(path.name, path)
        assert pool.drain()
        stats = pool.stats()
        assert stats["workers"] == 2
    got = results.by_token()
    assert isinstance(got["hang"], Skipped) and got["hang"].reason == SkipReason.DECODE_TIMEOUT
    assert all(isinstance(got[path.name], EncodedFile) for path in small)
    assert len(got) == 9
    assert stats["timeouts"] == 1 and stats["restarts"] == 1 and stats["crashes"] == 0
    assert stats["skipped"] == 1 and stats["encoded"] == 8


def test_crashing_workers_cost_one_file_each(tmp_path: Path, images: list[Path], hooked: None) -> None:
    crashes = [
        Path(shutil.copy(images[0], tmp_path / "crash.jpg")),
        Path(shutil.copy(images[1], tmp_path / "exit.jpg")),
    ]
    results = Outcomes()
    with EncodePool[str](1, results) as pool:  # one worker: the files after each crash need its replacement
        for path in [crashes[0], *images[:4], crashes[1], *images[4:8]]:
            pool.submit(path.name, path)
        assert pool.drain()
        stats = pool.stats()
    got = results.by_token()
    assert len(got) == 10
    for name, how in (("crash.jpg", "SIGSEGV"), ("exit.jpg", "code 3")):
        outcome = got[name]
        assert isinstance(outcome, Skipped) and outcome.reason == SkipReason.DECODER_CRASH
        assert how in outcome.detail
    assert all(isinstance(got[path.name], EncodedFile) for path in images[:8])
    assert stats["crashes"] == 2 and stats["restarts"] == 2 and stats["timeouts"] == 0


def test_unexpected_exception_is_a_decode_error_and_the_worker_lives_on(
    tmp_path: Path, images: list[Path], hooked: None
) -> None:
    raising = Path(shutil.copy(images[0], tmp_path / "raise.jpg"))
    results = Outcomes()
    with EncodePool[str](1, results) as pool:
        pids = pool.worker_pids()
        pool.submit("raise", raising)
        pool.submit("ok", images[1])
        assert pool.drain()
        assert pool.worker_pids() == pids
    got = results.by_token()
    assert isinstance(got["raise"], Skipped) and got["raise"].reason == SkipReason.DECODE_ERROR
    assert "RuntimeError" in got["raise"].detail
    assert isinstance(got["ok"], EncodedFile)


def test_a_failing_callback_does_not_stop_the_pool(images: list[Path]) -> None:
    delivered: list[str] = []

    def on_result(token: str, outcome: Outcome) -> None:
        delivered.append(token)
        if token == "first":
            raise ValueError("consumer bug")

    with EncodePool[str](1, on_result) as pool:
        pool.submit("first", images[0])
        pool.submit("second", images[1])
        assert pool.drain()
    assert delivered == ["first", "second"]


def test_a_slow_consumer_does_not_time_out_finished_files(tmp_path: Path, images: list[Path], hooked: None) -> None:
    """The second file finishes while on_result holds the pool up past its deadline: still encoded."""
    gate = small_jpeg(tmp_path / "gate.jpg", seed=200)
    first = small_jpeg(tmp_path / "first.jpg", seed=201)
    results = Outcomes()

    def slow_consumer(token: str, outcome: Outcome) -> None:
        results(token, outcome)
        if token == "first":
            release(gate)
            time.sleep(SHORT_TIMEOUT_S + 1)  # the scenario: held past the deadline, while the gated file completes

    with EncodePool[str](2, slow_consumer, timeout_s=SHORT_TIMEOUT_S) as pool:
        pool.submit("gated", gate)
        pool.submit("first", first)
        assert pool.drain()
        assert pool.stats()["timeouts"] == 0
    assert all(isinstance(outcome, EncodedFile) for outcome in results.by_token().values())
    assert len(results.items) == 2


def test_submit_blocks_while_max_pending_tasks_are_in_flight(tmp_path: Path, images: list[Path], hooked: None) -> None:
    gates = [Path(shutil.copy(images[i], tmp_path / f"gate{i}.jpg")) for i in range(2)]
    results = Outcomes()
    with EncodePool[str](1, results, max_pending=2) as pool:
        for gate in gates:
            pool.submit(gate.name, gate)  # both return at once: one running, one queued
        third = threading.Thread(target=pool.submit, args=("third", images[2]))
        third.start()
        third.join(timeout=0.5)
        assert third.is_alive()  # blocked: two tasks in flight
        assert pool.stats()["in_flight"] == 2 and results.items == []
        release(gates[0])
        third.join()  # the first gate's outcome makes room
        release(gates[1])
        assert pool.drain()
    assert set(results.by_token()) == {"gate0.jpg", "gate1.jpg", "third"}
    assert all(isinstance(outcome, EncodedFile) for _, outcome in results.items)


def test_close_with_tasks_in_flight_leaves_no_worker(tmp_path: Path, images: list[Path], hooked: None) -> None:
    hangs = [Path(shutil.copy(images[i], tmp_path / f"hang{i}.jpg")) for i in range(2)]
    results = Outcomes()
    pool = EncodePool[str](2, results, timeout_s=600)
    pool.start()
    pids = pool.worker_pids()
    assert len(pids) == 2 and pids_alive(pids) == pids
    for path in [*hangs, images[0]]:
        pool.submit(path.name, path)  # the workers hang on two, the third waits in the queue
    blocked_submit_error: list[BaseException] = []

    def submit_more() -> None:
        try:
            for i in range(10):
                pool.submit(f"more{i}", images[1])
        except RuntimeError as exc:
            blocked_submit_error.append(exc)

    producer = threading.Thread(target=submit_more)
    producer.start()  # fills max_pending (4), then blocks until close
    wait_until(lambda: pool.stats()["in_flight"] == 4, "the producer fills max_pending")
    pool.close()
    producer.join()
    pool.close()  # idempotent
    assert pids_alive(pids) == []
    assert not set(pids) & descendants(os.getpid())
    assert len(blocked_submit_error) == 1
    stats = pool.stats()
    assert stats["workers"] == 0 and stats["in_flight"] == 0 and stats["abandoned"] == 4
    assert results.items == []
    with pytest.raises(RuntimeError):
        pool.submit("late", images[0])


def test_workers_never_inherit_an_open_lmdb_environment(tmp_path: Path, images: list[Path]) -> None:
    env = lmdb.Environment(str(tmp_path / "store"), map_size=2**24, max_dbs=2)
    with env.begin(write=True) as txn:
        txn.put(b"key", b"value")
    reading = env.begin()  # a live read txn in the parent while the pool runs
    assert reading.get(b"key") == b"value"
    env_files = {str(tmp_path / "store" / "data.mdb"), str(tmp_path / "store" / "lock.mdb")}
    results = Outcomes()
    with EncodePool[str](2, results) as pool:
        for path in images[:4]:
            pool.submit(path.name, path)
        assert pool.drain()
        below_us = descendants(os.getpid())
        assert set(pool.worker_pids()) <= below_us
        for pid in below_us:
            assert not env_files & set(open_files(pid)), f"process {pid} holds the LMDB environment"
    assert all(isinstance(outcome, EncodedFile) for _, outcome in results.items) and len(results.items) == 4
    reading.abort()
    assert env.reader_check() == 0
    env.close()


def test_a_worker_stopped_from_outside_retries_its_file_once(tmp_path: Path, images: list[Path], hooked: None) -> None:
    """SIGTERM to a worker (a service manager stopping the group) is not the file's fault, once."""
    retried, crashed = (Path(shutil.copy(images[i], tmp_path / f"gate{i}.jpg")) for i in range(2))
    results = Outcomes()
    with EncodePool[str](1, results) as pool:

        def stop_the_worker_holding(gate: Path) -> None:
            wait_until(started(gate).exists, f"a worker holds {gate.name}")
            started(gate).unlink()
            [pid] = pool.worker_pids()
            os.kill(pid, signal.SIGTERM)
            wait_until(lambda: not pids_alive([pid]), "the stopped worker is gone")

        pool.submit("retried", retried)
        stop_the_worker_holding(retried)
        release(retried)  # its second worker lets it through
        assert pool.drain()
        pool.submit("crashed", crashed)
        stop_the_worker_holding(crashed)
        stop_the_worker_holding(crashed)  # the second time it counts as a crash
        assert pool.drain()
        wait_until(lambda: pool.stats()["workers"] == 1, "the last stopped worker is replaced")
        stats = pool.stats()
    got = results.by_token()
    assert isinstance(got["retried"], EncodedFile)
    outcome = got["crashed"]
    assert isinstance(outcome, Skipped) and outcome.reason == SkipReason.DECODER_CRASH
    assert "SIGTERM" in outcome.detail
    assert stats["retries"] == 2 and stats["crashes"] == 1 and stats["restarts"] == 3


def test_a_worker_killed_by_its_own_alarm_is_a_timeout(tmp_path: Path, images: list[Path], hooked: None) -> None:
    gate = Path(shutil.copy(images[0], tmp_path / "gate.jpg"))
    results = Outcomes()
    with EncodePool[str](1, results, timeout_s=600) as pool:
        pool.submit("gate", gate)
        wait_until(started(gate).exists, "a worker holds the file")
        os.kill(pool.worker_pids()[0], signal.SIGALRM)  # what the worker's kill switch delivers
        assert pool.drain()
        assert pool.stats()["timeouts"] == 1
    outcome = results.by_token()["gate"]
    assert isinstance(outcome, Skipped) and outcome.reason == SkipReason.DECODE_TIMEOUT


ORPHANING_DAEMON = """
import sys, time
from dedupd.encodepool import EncodePool

if __name__ == "__main__":
    pool = EncodePool(1, print, timeout_s=1)
    pool.start()
    print(pool.worker_pids()[0], flush=True)
    pool.submit(0, sys.argv[1])
    time.sleep(3600)
"""


def test_a_stuck_worker_outlives_a_killed_daemon_only_briefly(tmp_path: Path, images: list[Path], hooked: None) -> None:
    """SIGKILL the process owning the pool while its worker is stuck on a file: the worker still ends."""
    gate = Path(shutil.copy(images[0], tmp_path / "gate.jpg"))  # never released: stuck for good
    script = tmp_path / "daemon.py"
    script.write_text(ORPHANING_DAEMON)
    daemon = subprocess.Popen([sys.executable, str(script), str(gate)], stdout=subprocess.PIPE, text=True)
    assert daemon.stdout is not None
    worker = int(daemon.stdout.readline())
    try:
        wait_until(started(gate).exists, "the worker holds the file")
        daemon.kill()
        daemon.wait()
        wait_until(lambda: not pids_alive([worker]), "the orphaned worker ends itself")
    finally:
        if pids_alive([worker]):
            os.kill(worker, signal.SIGKILL)


def test_encode_requests_get_futures_and_fail_when_the_pool_closes(
    tmp_path: Path, hooked: None
) -> None:
    """`encode()` (query, needles) shares the workers with crash isolation; its outcome lands in a future, not
    on_result; a request still queued or running when the pool closes fails instead of waiting for ever."""
    outcomes = Outcomes()
    gate = small_jpeg(tmp_path / "gate.jpg", seed=1)
    with EncodePool(1, outcomes, timeout_s=60) as pool:
        pool.submit("gate", gate)
        wait_until(lambda: started(gate).exists(), "the worker holds the gate file")
        pool.submit("queued", small_jpeg(tmp_path / "queued.jpg", seed=2))
        asked = pool.encode(small_jpeg(tmp_path / "asked.jpg", seed=3))
        crashing = pool.encode(small_jpeg(tmp_path / "crash.jpg", seed=4))
        release(gate)
        assert isinstance(asked.result(timeout=60), EncodedFile)
        assert crashing.result(timeout=60).reason == SkipReason.DECODER_CRASH  # type: ignore[union-attr]
        pool.drain(60)
        assert set(outcomes.by_token()) == {"gate", "queued"}
        hung = pool.encode(small_jpeg(tmp_path / "hang.jpg", seed=5))
    with pytest.raises(RuntimeError, match="closed"):
        hung.result(timeout=60)


def test_an_idle_stopping_pool_runs_workers_only_while_there_is_work(
    tmp_path: Path, images: list[Path], hooked: None
) -> None:
    """With idle_stop_s no worker runs before the first file, one runs per task in flight (up to the pool's
    size), all stop once the pool was idle that long, and new work (a file, a request) starts them again
    with the same crash isolation."""
    gate = small_jpeg(tmp_path / "gate.jpg", seed=300)
    crash = Path(shutil.copy(images[0], tmp_path / "crash.jpg"))
    results = Outcomes()
    with EncodePool[str](2, results, idle_stop_s=0.5) as pool:
        assert pool.stats()["workers"] == 0 and pool.worker_pids() == []
        pool.submit("gate", gate)
        wait_until(started(gate).exists, "a worker started for the first file holds it")
        first = pool.worker_pids()
        assert len(first) == 1  # one task in flight: one worker
        release(gate)
        assert pool.drain()
        wait_until(lambda: pool.stats()["workers"] == 0, "the idle pool stops its worker")
        wait_until(lambda: not pids_alive(first), "the stopped worker's process is gone")
        assert pool.stats()["idle_stops"] == 1
        pool.submit("crash", crash)
        for path in images[1:4]:
            pool.submit(path.name, path)
        assert pool.drain()
        wait_until(lambda: pool.stats()["workers"] == 0, "the pool stops its workers again")
        asked = pool.encode(images[4])  # a request (query, needles) starts a worker too
        assert isinstance(asked.result(timeout=120), EncodedFile)
        wait_until(lambda: pool.stats()["workers"] == 0, "and stops it after the request")
        stats = pool.stats()
    got = results.by_token()
    assert isinstance(got["gate"], EncodedFile)
    assert isinstance(got["crash"], Skipped) and got["crash"].reason == SkipReason.DECODER_CRASH
    assert all(isinstance(got[path.name], EncodedFile) for path in images[1:4])
    # at least one stop per idle spell (more if this thread was descheduled past idle_stop_s between submits)
    assert stats["crashes"] == 1 and stats["idle_stops"] >= 3 and stats["encoded"] == 5
