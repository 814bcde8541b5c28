"""Store: records and secondary keys, moves and removals, versions, filesystems, map growth, mapped pages."""

import multiprocessing
import os
import stat
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from dedupd.errors import SkipReason, StoreError, StoreVersionMismatch
from dedupd.mounts import filesystem_type
from dedupd.records import Encoding, FileKey, FileRecord, Link, Move, Removal, Restat
from dedupd.store import UNMAP_READS, Store, refuse_network_filesystem


def record(path: str, n: int, *, emb: np.ndarray | None = None, size: int = 100) -> FileRecord:
    hashes = {"phash": (n * 0x9E3779B97F4A7C15) % 2**64, "dhash": n}
    return FileRecord(FileKey(path, 7, 1000 + n, size, 10**18 + n), Encoding(n.to_bytes(16, "big"), 4, 3, hashes, emb))


def all_paths(store: Store) -> set[str]:
    return {rec.key.path for _, rec in store.iter_records()}


def test_round_trip_and_secondary_keys(tmp_path: Path) -> None:
    emb = np.linspace(-1, 1, 8)
    with Store.open(tmp_path, model_id="m1", dim=8) as store:
        commit = store.commit(
            [
                record("/p/a.jpg", 1, emb=emb),
                record("/p/b.jpg", 2),
                FileRecord(FileKey("/p/bad.jpg", 7, 5, 3, 4), skip=SkipReason.TRUNCATED),
            ]
        )
        assert commit.seq == 1 and [rid for rid, _ in commit.added] == [1, 2, 3]
        got = store.get("/p/a.jpg", embedding=True)
        assert got is not None and got.encoding is not None
        assert got.encoding.hashes == {"phash": 0x9E3779B97F4A7C15, "dhash": 1}
        assert np.allclose(got.encoding.embedding, emb.astype(np.float16))
        assert store.get("/p/bad.jpg") == FileRecord(FileKey("/p/bad.jpg", 7, 5, 3, 4), skip=SkipReason.TRUNCATED)
        assert store.paths_for_digest((2).to_bytes(16, "big")) == ["/p/b.jpg"]
        assert store.paths_for_inode(7, 1002) == ["/p/b.jpg"]
        rids, hashes = store.hash_column("dhash")
        assert rids.tolist() == [1, 2] and hashes.tolist() == [1, 2]
        assert dict(store.export("dhash")) == {"/p/a.jpg": "0000000000000001", "/p/b.jpg": "0000000000000002"}
        assert store.counts() == {"encoded": 2, "skipped:truncated": 1}
        assert store.check() == []


def test_replacing_a_path_gives_a_new_rid_and_drops_the_old_keys(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        store.commit([record("/p/a.jpg", 1), record("/p/b.jpg", 2)], link=lambda c: [Link(1, 2, "phash", 3)])
        commit = store.commit([record("/p/a.jpg", 3)])
        assert commit.removed == (1,) and commit.added[0][0] == 3
        assert store.rids_for_digest((1).to_bytes(16, "big")) == []
        assert store.links_of(2) == []
        assert store.check() == []


def test_moves_and_removals_cover_whole_directories(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        store.commit([record("/p/d/x.jpg", 1), record("/p/d/sub/y.jpg", 2), record("/p/dd.jpg", 3)])
        commit = store.commit([Move("/p/d", "/q/e")])
        assert sorted(commit.moved) == [(1, "/p/d/x.jpg", "/q/e/x.jpg"), (2, "/p/d/sub/y.jpg", "/q/e/sub/y.jpg")]
        assert all_paths(store) == {"/q/e/x.jpg", "/q/e/sub/y.jpg", "/p/dd.jpg"}
        commit = store.commit([Move("/p/dd.jpg", "/q/e/x.jpg")])  # rename over an existing file
        assert commit.removed == (1,) and commit.moved == ((3, "/p/dd.jpg", "/q/e/x.jpg"),)
        assert sorted(store.commit([Removal("/q/e")]).removed) == [2, 3]
        assert all_paths(store) == set() and store.check() == []


def test_a_record_added_and_moved_in_one_batch_is_reported_at_its_final_path(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        commit = store.commit(
            [record("/p/a.jpg", 1), Move("/p/a.jpg", "/p/b.jpg"), record("/p/c.jpg", 2), Removal("/p/c.jpg")]
        )
        assert [(rid, rec.key.path) for rid, rec in commit.added] == [(1, "/p/b.jpg")]
        assert commit.removed == () and commit.moved == ()


def test_long_and_undecodable_paths(tmp_path: Path) -> None:
    long_dir = "/p/" + "d" * 600
    odd = os.fsdecode(b"/p/caf\xe9.jpg")
    with Store.open(tmp_path) as store:
        store.commit([record(long_dir + "/x.jpg", 1), record(long_dir + "/y.jpg", 2), record(odd, 3)])
        assert store.get(long_dir + "/y.jpg") is not None and store.get(odd) is not None
        store.commit([Move(long_dir, "/p/short")])
        assert all_paths(store) == {"/p/short/x.jpg", "/p/short/y.jpg", odd}
        assert store.check() == []


def test_links_must_join_existing_records(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        with pytest.raises(StoreError):
            store.commit([record("/p/a.jpg", 1)], link=lambda c: [Link(1, 99, "phash", 1)])
        assert all_paths(store) == set() and store.seq() == 0  # the whole batch was rolled back


def test_version_and_model_mismatches_name_both_sides(tmp_path: Path) -> None:
    Store.open(tmp_path, encoder_version="enc-1", model_id="m1", dim=4).close()
    with pytest.raises(StoreVersionMismatch, match="'enc-1'.*'enc-2'"):
        Store.open(tmp_path, encoder_version="enc-2")
    with pytest.raises(StoreVersionMismatch, match="'m1'.*'m2'"):
        Store.open(tmp_path, model_id="m2", dim=4)
    with Store.open(tmp_path, model_id="m1", dim=4) as store:
        store.commit([record("/p/a.jpg", 1, emb=np.ones(4))])
    with Store.open(tmp_path, model_id="m2", dim=8, drop_embeddings=True) as store:
        rec = store.get("/p/a.jpg", embedding=True)
        assert rec is not None and rec.encoding is not None and rec.encoding.embedding is None
        assert store.embeddings()[0].size == 0 and store.check() == []


def test_filesystem_type_from_mountinfo() -> None:
    mountinfo = (
        "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
        "40 22 0:50 / /srv/photo\\040share rw shared:9 - cifs //nas/photos rw\n"
        "41 22 0:51 / /home/u/remote rw - fuse.sshfs u@h: rw\n"
        "42 22 0:52 / /srv/photo\\040share/local rw - xfs /dev/sdb1 rw\n"
    )
    assert filesystem_type("/var/lib/dedupd", mountinfo) == "ext4"
    assert filesystem_type("/srv/photo share/x", mountinfo) == "cifs"
    assert filesystem_type("/srv/photo share/local/y", mountinfo) == "xfs"
    assert filesystem_type("/srv/photo sharex", mountinfo) == "ext4"
    assert filesystem_type("/home/u/remote/state", mountinfo) == "fuse.sshfs"


def test_network_state_dir_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "mountinfo"
    fake.write_text(f"22 1 8:1 / / rw - ext4 /dev/sda1 rw\n40 22 0:50 / {tmp_path} rw - nfs4 srv:/x rw\n")
    with pytest.raises(StoreError, match="network filesystem \\(nfs4\\)"):
        refuse_network_filesystem(tmp_path / "state", mountinfo_path=str(fake))
    refuse_network_filesystem(tmp_path)  # the real tmp dir is local


def test_map_grows_from_one_mebibyte_without_losing_records(tmp_path: Path) -> None:
    with Store.open(tmp_path, map_size=1 << 20) as store:
        for start in range(0, 100_000, 5_000):
            store.commit([record(f"/p/{n // 1000}/{n}.jpg", n + 1) for n in range(start, start + 5_000)])
        assert store.map_size > 1 << 20
    with Store.open(tmp_path, map_size=1 << 20) as store:
        assert store.counts() == {"encoded": 100_000}
        rids, hashes = store.hash_column("dhash")
        assert np.array_equal(hashes, np.arange(1, 100_001, dtype=np.uint64))
        assert store.get("/p/99/99999.jpg") is not None


def test_a_spawned_worker_pool_leaves_no_reader_slots(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        store.commit([record("/p/a.jpg", 1)])
        with multiprocessing.get_context("spawn").Pool(2) as pool:
            # os.getpid, not a function of this file: a spawned child cannot import tests/ under plain `pytest`
            workers = {pool.apply(os.getpid) for _ in range(4)}
        assert store.get("/p/a.jpg") is not None
        assert store.reader_check() == 0
        assert not workers & set(store.reader_pids())


def test_ignored_pairs_follow_record_ids(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        links = [Link(1, 2, "phash", 3), Link(1, 3, "exact", 0), Link(2, 3, "cnn", 0.9)]
        store.commit([record(f"/p/{n}.jpg", n) for n in range(1, 5)], link=lambda c: links)
        assert store.ignore([(2, 1), (1, 3)]) == 2 and store.ignore([(1, 2)]) == 0
        assert store.ignored() == [(1, 2), (1, 3)] and store.links_of(1) == []
        assert store.links_of(2) == [(3, "cnn", pytest.approx(0.9))]
        with pytest.raises(StoreError):
            store.ignore([(1, 99)])
        store.commit([Move("/p/1.jpg", "/q/1.jpg")])  # a move keeps the rid, so the pairs
        assert store.ignored() == [(1, 2), (1, 3)]
        same = record("/q/1.jpg", 1)
        commit = store.commit([replace(same, key=replace(same.key, mtime_ns=5))])  # re-encoded, same content
        assert commit.added[0][0] == 5 and commit.ignored == ((2, 5), (3, 5)) and store.ignored() == [(2, 5), (3, 5)]
        commit = store.commit([record("/p/2.jpg", 9)])  # changed content: a new rid without the pairs
        assert commit.ignored == () and store.ignored() == [(3, 5)]
        store.commit([Removal("/p/3.jpg")])
        assert store.ignored() == [] and store.check() == []


def test_links_are_replaced_with_their_rule(tmp_path: Path) -> None:
    with Store.open(tmp_path, model_id="m1", dim=4) as store:
        store.commit([record("/p/a.jpg", 1, emb=np.ones(4)), record("/p/b.jpg", 2), record("/p/c.jpg", 1)],
                     link=lambda c: [Link(1, 2, "phash", 3)])  # fmt: skip
        assert store.link_rule() is None and store.exact_groups() == [[1, 3]]
        store.replace_links([Link(2, 3, "cnn", 0.7)], {"hash_threshold": 10})
        assert store.link_rule() == {"hash_threshold": 10} and store.links_of(1) == []
        assert store.links_of(3) == [(2, "cnn", pytest.approx(0.7))]
    with Store.open(tmp_path, model_id="m2", dim=4, drop_embeddings=True) as store:  # the CNN decided those links
        assert store.link_rule() is None and store.links()[0].size == 0


def test_capture_and_thumbnail_round_trip_and_old_records_open_without_them(tmp_path: Path) -> None:
    """Records keep capture identity and thumbnail; a record of the previous layout (11 fields, no
    capture) still opens, with neither: it is filled when the file next changes, never re-decoded."""
    import msgpack

    from dedupd.records import Capture

    capture = Capture(format="JPEG", time="2024:06:01 18:30:14", subsec="52", make="Canon", unique_id="ab")
    new = record("/p/new.jpg", 1)
    new = replace(new, encoding=replace(new.encoding, capture=capture, thumb=bytes(range(256)) * 4))
    with Store.open(tmp_path) as store:
        store.commit([new, record("/p/old.jpg", 2)])
        with store._env.begin(write=True) as txn:  # rewrite /p/old.jpg as the previous version wrote it
            raw = txn.get((2).to_bytes(8, "big"), db=store._dbs["files"])
            txn.put((2).to_bytes(8, "big"), msgpack.packb(msgpack.unpackb(raw)[:11]), db=store._dbs["files"])
    with Store.open(tmp_path) as store:
        got, old = store.get("/p/new.jpg"), store.get("/p/old.jpg")
        assert got is not None and got.encoding is not None and old is not None and old.encoding is not None
        assert got.encoding.capture == capture and got.encoding.thumb == bytes(range(256)) * 4
        assert old.encoding.capture is None and old.encoding.thumb is None
        assert old.encoding.hashes == record("/p/old.jpg", 2).encoding.hashes  # type: ignore[union-attr]
        assert store.check() == []


def test_one_process_at_a_time_owns_a_state_dir(tmp_path: Path) -> None:
    with Store.open(tmp_path):
        with pytest.raises(StoreError, match=f"the state dir {tmp_path} is in use by dedupd pid {os.getpid()}"):
            Store.open(tmp_path)
    Store.open(tmp_path).close()  # released on close


def test_a_store_left_world_readable_by_an_older_dedupd_is_made_private(tmp_path: Path) -> None:
    Store.open(tmp_path).close()
    for path in (tmp_path / "store", *(tmp_path / "store").iterdir()):
        path.chmod(0o755 if path.is_dir() else 0o644)
    Store.open(tmp_path).close()
    files = (tmp_path / "store", *(tmp_path / "store").iterdir())
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in files}
    assert modes == {"store": 0o700, "data.mdb": 0o600, "lock.mdb": 0o600}


def _skip(path: str, n: int, reason: SkipReason = SkipReason.SIDECAR) -> FileRecord:
    return FileRecord(FileKey(path, 7, 5000 + n, 10, 10**18 + n), skip=reason)


def _companions(store: Store, *paths: str) -> dict[str, list[str]]:
    return {path: [c.path for c in found] for path, found in store.companions(paths).items()}


def test_companions_follow_adds_moves_and_removals_of_the_image_and_of_the_companion(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        store.commit([record("/c/IMG_1.HEIC", 1), _skip("/c/IMG_1.AAE", 2), _skip("/c/IMG_1.HEIC.xmp", 3),
                      _skip("/c/IMG_1.MOV", 4, SkipReason.MOTION), record("/c/IMG_2.jpg", 5)])
        assert _companions(store, "/c/IMG_1.HEIC", "/c/IMG_2.jpg") == {
            "/c/IMG_1.HEIC": ["/c/IMG_1.AAE", "/c/IMG_1.HEIC.xmp", "/c/IMG_1.MOV"]}
        store.commit([_skip("/c/IMG_2.xmp", 6), Move("/c/IMG_1.AAE", "/c/IMG_2.AAE")])  # one arrives, one moves over
        assert _companions(store, "/c/IMG_1.HEIC", "/c/IMG_2.jpg") == {
            "/c/IMG_1.HEIC": ["/c/IMG_1.HEIC.xmp", "/c/IMG_1.MOV"], "/c/IMG_2.jpg": ["/c/IMG_2.AAE", "/c/IMG_2.xmp"]}
        store.commit([Move("/c", "/d"), Removal("/d/IMG_2.xmp")])  # the folder is renamed, a sidecar deleted
        assert _companions(store, "/c/IMG_1.HEIC", "/d/IMG_1.HEIC", "/d/IMG_2.jpg") == {
            "/d/IMG_1.HEIC": ["/d/IMG_1.HEIC.xmp", "/d/IMG_1.MOV"], "/d/IMG_2.jpg": ["/d/IMG_2.AAE"]}
        store.commit([Move("/d/IMG_1.HEIC", "/d/holiday.HEIC"), Removal("/d/IMG_2.jpg")])
        assert _companions(store, "/d/holiday.HEIC") == {}  # renamed alone: its companions no longer name it
        assert _companions(store, "/d/IMG_1.HEIC") == {"/d/IMG_1.HEIC": ["/d/IMG_1.HEIC.xmp", "/d/IMG_1.MOV"]}
        store.commit([_skip("/d/IMG_1.HEIC.xmp", 7, SkipReason.UNREADABLE), record("/d/IMG_1.MOV", 8)])
        # an encoded .MOV is no companion (its bytes were a picture); a skipped sidecar is one whatever the reason
        assert _companions(store, "/d/IMG_1.HEIC") == {"/d/IMG_1.HEIC": ["/d/IMG_1.HEIC.xmp"]}
        assert store.check() == []


def test_a_store_of_the_previous_version_gets_its_companions_indexed_at_open_without_a_decode(tmp_path: Path) -> None:
    import lmdb
    import msgpack

    with Store.open(tmp_path) as store:
        store.commit([record("/c/IMG_1.jpg", 1), _skip("/c/IMG_1.xmp", 2), _skip("/c/" + "x" * 600 + ".xmp", 3)])
        with store._env.begin(write=True) as txn:  # as the previous version left it: no such DB, no marker
            txn.drop(store._dbs["companions"], delete=True)
            txn.delete(b"companions_seq", db=store._dbs["meta"])
    env = lmdb.open(str(tmp_path / "store"), max_dbs=64)
    with env.begin() as txn:
        assert txn.get(b"companions") is None  # the main DB lists named DBs: it is gone
    env.close()
    with Store.open(tmp_path, verify_all=True) as store:  # an unclean open checks everything first
        assert _companions(store, "/c/IMG_1.jpg") == {"/c/IMG_1.jpg": ["/c/IMG_1.xmp"]}
        assert store.check() == []
        store.commit([_skip("/c/IMG_1.jpg.xmp", 4)])
        with store._env.begin(write=True) as txn:  # as a dedupd without the index leaves that batch
            txn.put(b"companions_seq", msgpack.packb(store.seq() - 1), db=store._dbs["meta"])
            with txn.cursor(store._dbs["companions"]) as cur:
                doomed = [(k, v) for k, v in cur if v == (4).to_bytes(8, "big")]
            assert len(doomed) == 1 and txn.delete(*doomed[0], db=store._dbs["companions"])
    with Store.open(tmp_path) as store:
        assert _companions(store, "/c/IMG_1.jpg") == {"/c/IMG_1.jpg": ["/c/IMG_1.jpg.xmp", "/c/IMG_1.xmp"]}
        assert store.check() == []


def test_records_are_found_by_file_size_newest_first_through_every_change(tmp_path: Path) -> None:
    """`of_size`: the encoded records of a size (skips are not), kept through replace, restat, move and removal."""
    with Store.open(tmp_path) as store:
        store.commit([record("/p/a.jpg", 1, size=500), record("/p/b.jpg", 2, size=500), record("/p/c.jpg", 3),
                      FileRecord(FileKey("/p/bad.jpg", 7, 5, 500, 4), skip=SkipReason.TRUNCATED)])

        def paths(size: int) -> list[str]:
            return [rec.key.path for rec in store.of_size(size)]

        assert paths(500) == ["/p/b.jpg", "/p/a.jpg"] and paths(100) == ["/p/c.jpg"] and paths(7) == []
        assert [rec.key.path for rec in store.of_size(500, limit=1)] == ["/p/b.jpg"]
        store.commit([record("/p/a.jpg", 4, size=900)])  # a.jpg rewritten at another size: a new record
        assert paths(500) == ["/p/b.jpg"] and paths(900) == ["/p/a.jpg"]
        store.commit([Restat(FileKey("/p/b.jpg", 7, 77, 500, 5))])  # a touch: same size, same record
        store.commit([Move("/p", "/q"), Removal("/q/c.jpg")])
        assert paths(500) == ["/q/b.jpg"] and paths(900) == ["/q/a.jpg"] and paths(100) == []
        assert store.check() == []


def test_a_store_without_the_size_index_gets_it_at_open(tmp_path: Path) -> None:
    import msgpack

    with Store.open(tmp_path) as store:
        store.commit([record("/c/a.jpg", 1, size=300), record("/c/b.jpg", 2, size=300)])
        with store._env.begin(write=True) as txn:  # as the previous version left it: no such DB, no marker
            txn.drop(store._dbs["sizes"], delete=True)
            txn.delete(b"sizes_seq", db=store._dbs["meta"])
    with Store.open(tmp_path, verify_all=True) as store:  # an unclean open checks everything first
        assert [rec.key.path for rec in store.of_size(300)] == ["/c/b.jpg", "/c/a.jpg"]
        assert store.check() == []
        store.commit([record("/c/d.jpg", 3, size=300)])
        with store._env.begin(write=True) as txn:  # as a dedupd without the index leaves that batch
            txn.put(b"sizes_seq", msgpack.packb(store.seq() - 1), db=store._dbs["meta"])
            assert txn.delete((300).to_bytes(8, "big"), (3).to_bytes(8, "big"), db=store._dbs["sizes"])
        assert store.check() == []  # an index not current is not checked: it is rebuilt at the next open
    with Store.open(tmp_path) as store:
        assert [rec.key.path for rec in store.of_size(300)] == ["/c/d.jpg", "/c/b.jpg", "/c/a.jpg"]
        assert store.check() == []


def mapped_kib(data_file: Path) -> int:
    """This process's resident pages of `data_file`'s mappings, from /proc/self/smaps."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split(maxsplit=1)[0]
        if not head.endswith(":"):  # a mapping's header line: address range, perms, offset, dev, inode, path
            inside = line.endswith(str(data_file))
        elif inside and head == "Rss:":
            total += int(line.split()[1])
    return total


def test_reads_do_not_leave_the_store_file_mapped(tmp_path: Path) -> None:
    n, dim = 3_000, 512  # ~5 MiB of records and embeddings; more records than UNMAP_READS
    assert n > UNMAP_READS
    data = tmp_path / "store" / "data.mdb"
    vectors = np.random.default_rng(3).standard_normal((n, dim)).astype(np.float16)
    with Store.open(tmp_path, model_id="m", dim=dim, map_size=1 << 20) as store:  # grows (a new map) as it fills
        for start in range(0, n, 500):
            store.commit([record(f"/p/{i}.jpg", i + 1, emb=vectors[i]) for i in range(start, start + 500)])
        assert store.map_size > 1 << 20
        rids = [rid for rid, _ in store.iter_records()]
        store.unmap()
        assert mapped_kib(data) == 0
        few = store.records(rids[:20], embedding=True)  # a few reads: their pages stay mapped
        assert mapped_kib(data) > 0 and len(few) == 20
        every = store.records(rids, embedding=True)  # dropped as it goes: the last reads' pages stay mapped
        assert 0 < mapped_kib(data) < data.stat().st_size // 1024 // 2
        assert np.array_equal(np.stack([every[r].encoding.embedding for r in rids]), vectors)  # type: ignore[union-attr]
        keys, rows = store.embeddings()
        assert mapped_kib(data) == 0 and np.array_equal(rows, vectors)
        assert store.check() == [] and mapped_kib(data) == 0
        for rid in rids:  # one by one: the pages of the reads since the last drop (< UNMAP_READS) stay mapped
            store.records([rid], embedding=True)
        assert 0 < mapped_kib(data) < data.stat().st_size // 1024 // 2
