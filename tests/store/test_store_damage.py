"""Damaged stores, on real LMDB files: truncated, emptied, byte-flipped and inconsistent data.mdb files are
found at open with one clear line (never a SIGBUS, never an empty store in their place), `check()` lists
what is wrong without raising, and `repair` keeps every record (and ignored pair) it can read."""

import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import lmdb
import msgpack
import numpy as np
import pytest

from dedupd.errors import StoreDamaged
from dedupd.records import Encoding, FileKey, FileRecord, Link
from dedupd.store import REPAIR_HINT, Store, diagnose, repair

RECORDS = 3000
DIM = 8


def _record(n: int) -> FileRecord:
    rng = random.Random(n)
    hashes = {"phash": rng.getrandbits(64), "dhash": rng.getrandbits(64)}
    emb = np.full(DIM, n % 7, dtype=np.float32)
    return FileRecord(FileKey(f"/photos/{n // 100:03d}/img_{n:05d}.jpg", 1, 10_000 + n, 4000 + n, 10**18 + n),
                      Encoding(rng.randbytes(16), 640, 480, hashes, emb))


@pytest.fixture(scope="module")
def sound(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store of 3000 records with embeddings, links and two ignored pairs (made once, copied per test)."""
    state = tmp_path_factory.mktemp("sound")
    with Store.open(state, model_id="m", dim=DIM) as store:
        for first in range(0, RECORDS, 500):
            store.commit([_record(n) for n in range(first, first + 500)],
                         link=lambda c: [Link(a, b, "phash", 2.0) for (a, _), (b, _) in zip(c.added[:20:2],
                                                                                              c.added[1:20:2],
                                                                                              strict=True)])
        store.ignore([(1, 2), (2999, 3000)])
        assert store.check() == []
    return state


def _copy(sound: Path, tmp_path: Path) -> Path:
    state = tmp_path / "state"
    shutil.copytree(sound / "store", state / "store")
    return state


def _open_in_child(state: Path) -> subprocess.CompletedProcess[str]:
    """Store.open in its own process, so a SIGBUS (the bug) fails the test instead of killing pytest."""
    script = "import sys\nfrom dedupd.store import Store\nStore.open(sys.argv[1]).close()\nprint('opened')"
    return subprocess.run([sys.executable, "-c", script, str(state)], capture_output=True, text=True, timeout=120)


def _flip(data: Path, flips: int, seed: int) -> None:
    rng = random.Random(seed)
    size = data.stat().st_size
    with open(data, "r+b") as handle:
        for _ in range(flips):
            offset = rng.randrange(2 * 4096, size)  # past the two meta pages: LMDB would fall back to the other one
            handle.seek(offset)
            byte = handle.read(1)[0]
            handle.seek(offset)
            handle.write(bytes([byte ^ (1 << rng.randrange(8))]))


DAMAGE = {
    "truncated to 8 KiB": lambda data: os.truncate(data, 8192),
    "truncated to 12 KiB": lambda data: os.truncate(data, 12288),
    "truncated to half": lambda data: os.truncate(data, data.stat().st_size // 2),
    "truncated to 0 bytes": lambda data: os.truncate(data, 0),
    **{f"20 byte flips (seed {seed})": (lambda data, seed=seed: _flip(data, 20, seed)) for seed in range(4)},
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_file_is_one_clear_error_at_open_and_repair_keeps_what_it_can(sound, tmp_path, damage) -> None:
    state = _copy(sound, tmp_path)
    data = state / "store" / "data.mdb"
    DAMAGE[damage](data)
    size = data.stat().st_size
    opened = _open_in_child(state)
    assert opened.returncode != -signal.SIGBUS, "SIGBUS opening a damaged store"
    assert opened.returncode == 1 and "opened" not in opened.stdout, (opened.stdout, opened.stderr)
    last = opened.stderr.strip().splitlines()[-1]
    assert last.startswith("dedupd.errors.StoreDamaged: the store ") and REPAIR_HINT in last, opened.stderr
    assert data.stat().st_size == size, "the damaged file was changed by opening it"

    problems = diagnose(state)
    assert problems, "diagnose found nothing wrong"
    done = repair(state)
    assert done.damaged_copy is not None and (done.damaged_copy / "data.mdb").stat().st_size == size
    with Store.open(state, model_id="m", dim=DIM) as store:  # sound again, and holding only sound records
        assert store.check() == []
        kept = dict(store.iter_records())
        assert len(kept) == done.kept <= RECORDS
        for rid, rec in kept.items():
            got = store.get(rec.key.path, embedding=True)
            n = int(rec.key.path[-9:-4])
            want = _record(n)
            # Kept records are the originals in every field that has a second copy in the store (path, inode,
            # digest, hashes). Size and mtime have none: a flipped one makes the start-up scan re-encode that file.
            assert rid == n + 1 and rec.encoding is not None and want.encoding is not None
            assert (rec.key.path, rec.key.dev, rec.key.inode) == (want.key.path, want.key.dev, want.key.inode)
            assert (rec.encoding.digest, rec.encoding.hashes) == (want.encoding.digest, want.encoding.hashes)
            assert got is not None and got.encoding is not None and got.encoding.embedding is not None
            assert got.encoding.embedding.shape == (DIM,)
        assert set(store.ignored()) == {pair for pair in ((1, 2), (2999, 3000)) if set(pair) <= set(kept)}
        if damage.startswith("20 byte flips"):
            assert done.kept >= RECORDS * 0.9, done  # a few damaged pages cost a few records, not the store


def test_inconsistent_records_are_found_and_check_never_raises(sound, tmp_path) -> None:
    """What the structure verifier cannot see (values that decode but disagree) is found by check()."""
    state = _copy(sound, tmp_path)
    env = lmdb.open(str(state / "store"), max_dbs=64)  # written behind the store's back, as damage is
    with env.begin(write=True) as txn:
        files = env.open_db(b"files", txn=txn)
        txn.put((5).to_bytes(8, "big"), b"\xc1 not msgpack", db=files)
        fields = msgpack.unpackb(txn.get((6).to_bytes(8, "big"), db=files))
        fields[9] = {"xhash": 1, **fields[9]}  # a hash name the store has no column for (was: KeyError)
        txn.put((6).to_bytes(8, "big"), msgpack.packb(fields), db=files)
        fields = msgpack.unpackb(txn.get((7).to_bytes(8, "big"), db=files))
        fields[0] = b"/photos/elsewhere.jpg"  # a flipped path: its path key is missing
        txn.put((7).to_bytes(8, "big"), msgpack.packb(fields), db=files)
        meta = env.open_db(b"meta", txn=txn)  # counts that claim more records than there are (status would say so)
        txn.put(b"counts", msgpack.packb({"encoded": RECORDS + 500}), db=meta)
    env.close()
    with pytest.raises(StoreDamaged) as damaged:
        Store.open(state)
    problems = damaged.value.problems  # type: ignore[attr-defined]  # from check(), which raised KeyError
    assert any("rid 5: unreadable record" in p for p in problems), problems
    assert any("rid 6: hash 'xhash'" in p for p in problems), problems
    assert any(p.startswith("paths: ") for p in problems), problems
    assert any(p.startswith(f"counts: the store says {{'encoded': {RECORDS + 500}}}") for p in problems), problems
    with pytest.raises(StoreDamaged, match="check-store --repair"):
        Store.open(state)
    done = repair(state)
    # rid 5 unreadable, rid 6 with a hash the store has no column for, rid 7 whose path key disagrees: the daemon's
    # start-up scan re-encodes their files
    assert (done.kept, done.dropped, done.ignored) == (RECORDS - 3, 3, 2)
    with Store.open(state, model_id="m", dim=DIM) as store:
        assert store.check() == [] and set(store.ignored()) == {(1, 2), (2999, 3000)}
        assert store.get("/photos/elsewhere.jpg") is None and store.get(_record(6).key.path) is None


def test_a_deleted_data_file_is_not_replaced_by_an_empty_store(sound, tmp_path) -> None:
    state = _copy(sound, tmp_path)
    (state / "store" / "data.mdb").unlink()
    with pytest.raises(StoreDamaged, match="data.mdb is missing"):
        Store.open(state)
    assert not (state / "store" / "data.mdb").exists()


def test_a_sound_store_and_no_store_are_told_apart(sound, tmp_path) -> None:
    assert diagnose(tmp_path / "none") is None and not (tmp_path / "none").exists()
    assert diagnose(_copy(sound, tmp_path)) == []


def test_an_interrupted_repair_is_finished_at_the_next_open(sound, tmp_path) -> None:
    state = _copy(sound, tmp_path)
    (state / "store").rename(state / "store.repaired")  # a repair stopped between its two renames
    with Store.open(state, model_id="m", dim=DIM) as store:
        assert len(list(store.iter_records())) == RECORDS


def test_a_clean_close_spares_the_next_open_the_full_check_but_any_change_to_the_file_does_not(sound, tmp_path):
    state = _copy(sound, tmp_path)
    Store.open(state).close()  # checked (no record of a clean close yet), then closed cleanly
    assert (state / "store.closed").exists()
    _flip(state / "store" / "data.mdb", 20, seed=0)  # the same size, bytes changed behind its back
    with pytest.raises(StoreDamaged):
        Store.open(state)
    assert not (state / "store.closed").exists()  # a failed open leaves no record of a clean close
