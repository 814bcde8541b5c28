"""Crash safety with real processes: SIGKILL a committing writer (and readers) at random moments."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dedupd.store import Store

BATCH = 12  # records per batch
KEEP = 5  # the writer removes the directory of batch seq - KEEP, so KEEP batches are live

WRITER = f"""
import sys
from dedupd.records import Encoding, FileKey, FileRecord
from dedupd.records import Link, Removal
from dedupd.store import Store

def batch(seq):
    recs = [
        FileRecord(FileKey(f"/r/{{seq}}/{{i}}.jpg", 1, seq * 1000 + i, 10 + i, seq),
                   Encoding(bytes([seq % 256, i]) * 8, 8, 8, {{"phash": seq * 64 + i, "dhash": i}}))
        for i in range({BATCH})
    ]
    return recs + [Removal(f"/r/{{seq - {KEEP}}}")]

def links(commit):
    rids = [rid for rid, _ in commit.added]
    return [Link(a, b, "phash", 1.0) for a, b in zip(rids, rids[1:])]

with Store.open(sys.argv[1], map_size=1 << 20) as store:
    seq = store.seq()
    while True:
        seq = store.commit(batch(seq + 1), link=links).seq
        print(seq, flush=True)
"""

READER = """
import sys, time, lmdb
env = lmdb.open(sys.argv[1] + "/store", max_dbs=64, max_readers=1024, map_size=1 << 20)
txn = env.begin()
print("reading", flush=True)
time.sleep(60)
"""


def spawn(script: str, state: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", script, str(state)], stdout=subprocess.PIPE, text=True)


def verify(state: Path, reported: list[int], dead_readers: list[int]) -> int:
    with Store.open(state) as store:
        assert not set(dead_readers) & set(store.reader_pids()), "stale reader slots were not reclaimed"
        last = store.seq()
        assert not reported or max(reported) <= last, "a batch reported committed is missing"
        assert store.check() == []
        live = range(max(1, last - KEEP + 1), last + 1)
        expected = {f"/r/{s}/{i}.jpg" for s in live for i in range(BATCH)}
        assert {rec.key.path for _, rec in store.iter_records()} == expected
        a, _, _, _, _ = store.links()
        assert len(a) == len(live) * (BATCH - 1)
        return last


def crash_loop(tmp_path: Path, kills: int, seed: int) -> None:
    rng = random.Random(seed)
    state = tmp_path / "state"
    last = 0
    for round_ in range(kills):
        writer = spawn(WRITER, state)
        reader = spawn(READER, state) if round_ % 2 else None
        if reader is not None:
            assert reader.stdout is not None and reader.stdout.readline() == "reading\n"
        assert writer.stdout is not None
        early = ""
        if round_ % 4 != 3:  # mostly mid-loop; every fourth kill may land while the writer opens the store
            early = writer.stdout.readline()
        time.sleep(rng.uniform(0.0, 0.25))
        writer.send_signal(signal.SIGKILL)
        out = early + writer.communicate()[0]
        dead = []
        if reader is not None:
            reader.send_signal(signal.SIGKILL)
            reader.communicate()
            dead.append(reader.pid)
        reported = [int(x) for x in out.split()]
        last = verify(state, reported, dead)
    assert last > 0  # the writer got to commit at all


def test_sigkill_at_random_moments_loses_nothing_committed(tmp_path: Path) -> None:
    crash_loop(tmp_path, kills=20, seed=1)


@pytest.mark.slow
def test_sigkill_soak(tmp_path: Path) -> None:
    """60 kills (~40 s) by default; DEDUPD_CRASH_KILLS=1000 for a real soak."""
    crash_loop(tmp_path, kills=int(os.environ.get("DEDUPD_CRASH_KILLS", "60")), seed=2)
