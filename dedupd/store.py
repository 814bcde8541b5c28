"""The only LMDB user: the durable record of every file dedupd has seen, and the links between duplicates.

Layout (one environment in `<state_dir>/store/`, named databases):

- ``meta``        schema/encoder/model versions, batch sequence, next record id, counters (msgpack values).
- ``files``       rid -> record (msgpack list, path as bytes so non-UTF-8 names survive). The capture
                  identity and the 32x32 thumbnail are its last two fields; a record written before
                  they existed has neither and keeps none until the file changes (filled on the next
                  change, never by re-decoding an unchanged file: such a file gives no capture evidence).
- ``paths``       path key -> rid. Keys over LMDB's 511-byte limit are a prefix plus an xxh3-128 of the path.
- ``digests``     content digest -> rid (dupsort): the persistent exact-duplicate map.
- ``inodes``      (dev, inode) -> rid (dupsort): move detection; several rids for hard links.
- ``sizes``       file size -> rid (dupsort) of every encoded record: a new file of a stored size may be a byte
                  copy of one, so the daemon has a worker read it with that record's digest before decoding it
                  (`of_size`). Meta ``sizes_seq`` is the batch it was current at; a store written without it is
                  indexed at open in one pass over the records (none is decoded).
- ``emb``         rid -> float16 embedding bytes.
- ``h:<name>``    rid -> u64 per hash method: a column read in one pass when the index is rebuilt.
- ``links``       rid -> (other rid, method code, score) (dupsort, both directions): the match graph the
                  catalog computed when a record arrived, so duplicate groups rebuild without re-searching.
                  Meta ``link_rule`` holds the rule (thresholds) the links were computed with.
- ``ignored``     rid -> other rid (dupsort, both directions): pairs the user declared not duplicates. Keyed
                  by rid, so a move keeps a pair and a changed file (new rid) drops it; a file re-encoded
                  with the same content digest keeps its pairs.
- ``companions``  (folder, basename) key -> rid (dupsort) of every skip record named like a sidecar or a
                  motion file (`dedupd.companions`): an image's companions are found by its own name, so
                  they stay current through every add, removal and move of the image and of the companion
                  (the same three places that keep ``paths``). Meta ``companions_seq`` is the batch it was
                  current at: a store written by a dedupd without it (or one that wrote without keeping it)
                  has it rebuilt at open from the ``paths`` keys, reading only the few records so named.

A record id (rid) is never reused: replacing a path's record allocates a new rid, so the in-memory index
(keyed by rid, appended in rid order) never sees a key change value. A move keeps the rid.

Concurrency: one Store per process; all transactions go through an internal lock, so the writer (the
catalog, one thread) and readers in other threads never race a map resize.

Memory: the file is memory-mapped, and every page read stays mapped (in the process's RSS) until the store
drops its mappings, which it does itself once UNMAP_READS records and keys were read since the last time;
the pages stay in the page cache. Encode worker processes must
never open or inherit the environment: start them with the ``spawn``/``forkserver`` context.
"""

from __future__ import annotations

import logging
import os
import shutil
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import astuple, dataclass, replace
from pathlib import Path
from typing import Any

import lmdb
import lmdb.verify as lmdb_verify
import msgpack
import numpy as np
import xxhash

from dedupd import lockfile
from dedupd.companions import Companion, attached, basename_key, named_like_companion
from dedupd.errors import SkipReason, StoreDamaged, StoreError, StoreLocked, StoreVersionMismatch
from dedupd.memory import file_mappings, unmap_file_pages
from dedupd.mounts import MOUNTINFO, NETWORK_FILESYSTEMS, filesystem_type, read_mountinfo
from dedupd.pathnames import is_under
from dedupd.records import Capture, Commit, Encoding, FileKey, FileRecord, Link, Move, Removal, Restat, StoreChange

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
DEFAULT_MAP_SIZE = 1 << 40  # 1 TiB of address space; only written pages use disk
MAX_READERS = 1024
_MAX_DBS = 64
_MAX_KEY = 511
_PAGE = 1024  # records per read transaction when iterating, so no read txn lives long
#: The store drops its mapped pages (`Store.unmap`) after each operation that brings the records and keys read
#: since the last drop to this many: each read can map 64 KiB of cached pages around it (the kernel's
#: fault-around), so at most ~128 MiB of the file stays in the process's RSS (BENCHMARKS.md "Archive": one
#: pass over the 80,000 linked records of a 1M library mapped all of its 2.4 GiB).
UNMAP_READS = 2_048
#: The lock file in the state dir: one process at a time owns a store (see `lockfile`).
LOCK_NAME = "dedupd.lock"

_DBS = (
    ("meta", False),
    ("files", False),
    ("paths", False),
    ("digests", True),
    ("inodes", True),
    ("sizes", True),
    ("emb", False),
    ("links", True),
    ("ignored", True),
    ("companions", True),
)  # (name, dupsort)
_LINK = struct.Struct(">QBf")  # other rid, method code, score (distance or similarity)
_DEVINO = struct.Struct(">QQ")
_SIZE = struct.Struct(">Q")


#: Every transaction is opened without `buffers`: lmdb hands back bytes, not memoryviews.
type Txn = lmdb.Transaction[bytes]


type LinkFinder = Callable[[Commit], Iterable[Link]]


# --------------------------------------------------------------------------------------------- filesystems
def refuse_network_filesystem(path: str | os.PathLike[str], mountinfo_path: str = MOUNTINFO) -> None:
    """LMDB's locking and mmap are unsafe on remote filesystems, so a state dir there is refused."""
    real = os.path.realpath(path)
    text = read_mountinfo(mountinfo_path)
    if text is None:
        log.warning("cannot read %s; state dir filesystem not checked", mountinfo_path)
        return
    fstype = filesystem_type(real, text)
    if fstype in NETWORK_FILESYSTEMS:
        raise StoreError(f"state_dir {real} is on a network filesystem ({fstype}); LMDB needs a local filesystem")


# --------------------------------------------------------------------------------------------- state dir
def _lock_state_dir(state: Path) -> int:
    """Create the state dir (0700) and take its lock: a second dedupd on it gets one line naming the holder."""
    try:
        state.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise StoreError(f"cannot create state dir {state}: {e.strerror}") from e
    refuse_network_filesystem(state)
    try:
        return lockfile.hold(state / LOCK_NAME, f"the state dir {state}")
    except lockfile.Locked as e:
        raise StoreLocked(f"{e}; stop it first (two processes on one store corrupt it)") from None
    except OSError as e:
        raise StoreError(f"cannot lock state dir {state}: {e.strerror}") from e


def _private_store_dir(state: Path) -> Path:
    """`<state>/store`, 0700 with its files 0600 (the store lists every path of the library); older, looser
    modes are tightened."""
    store_dir = state / "store"
    try:
        if not store_dir.exists() and (state / _REPAIRED).exists():
            log.warning("finishing an interrupted repair: %s becomes the store", state / _REPAIRED)
            (state / _REPAIRED).rename(store_dir)
        store_dir.mkdir(mode=0o700, exist_ok=True)
        for path, mode in ((store_dir, 0o700), (store_dir / "data.mdb", 0o600), (store_dir / "lock.mdb", 0o600)):
            if path.exists() and path.stat().st_mode & 0o077:
                log.info("making %s private (mode %o)", path, mode)
                path.chmod(mode)
    except OSError as e:
        raise StoreError(f"cannot create store dir {store_dir}: {e.strerror}") from e
    return store_dir


# --------------------------------------------------------------------------------------------- encoding
def _rid_key(rid: int) -> bytes:
    return rid.to_bytes(8, "big")


def _path_key(path: str) -> bytes:
    """Sortable key of a path; long paths keep a prefix (so subtree scans work) plus a digest."""
    raw = os.fsencode(path)
    if len(raw) <= _MAX_KEY:
        return raw
    return raw[: _MAX_KEY - 16] + xxhash.xxh3_128_digest(raw)


def _companion_key(path: str) -> bytes:
    """Key of a path's (folder, basename) in the ``companions`` DB: the folder's path key, NUL, the basename."""
    directory, stem = basename_key(path)
    return _path_key(directory + "/\0" + stem)


def _is_companion(rec: FileRecord) -> bool:
    """Whether a record is indexed in ``companions``: a skip record named like a sidecar or a motion file."""
    return rec.encoding is None and named_like_companion(rec.key.path)


def _pack_record(rec: FileRecord, has_embedding: bool) -> bytes:
    k, enc = rec.key, rec.encoding
    return msgpack.packb(
        [
            os.fsencode(k.path), k.dev, k.inode, k.size, k.mtime_ns,
            rec.skip.value if rec.skip else None,
            enc.digest if enc else None,
            enc.width if enc else 0,
            enc.height if enc else 0,
            dict(enc.hashes) if enc else None,
            has_embedding,
            list(astuple(enc.capture)) if enc and enc.capture else None,
            enc.thumb if enc else None,
        ]
    )  # fmt: skip


def _required(txn: Txn, key: bytes, db: Any) -> bytes:
    """A value the store's own invariants say is there (a record an index points at); missing means corrupt."""
    raw = txn.get(key, db=db)
    if raw is None:
        raise StoreError(f"store is inconsistent: an index names key {key.hex()}, which has no value")
    return raw


def _unpack_record(raw: bytes, embedding: np.ndarray | None = None) -> tuple[FileRecord, bool]:
    fields = msgpack.unpackb(raw)
    path, dev, ino, size, mtime, skip, digest, w, h, hashes, has_emb = fields[:11]
    # Records of schema 1 before capture identity had 11 fields: no capture, no thumbnail (no evidence).
    capture, thumb = fields[11:13] if len(fields) >= 13 else (None, None)
    key = FileKey(os.fsdecode(path), dev, ino, size, mtime)
    enc = None
    if digest is not None:
        enc = Encoding(digest, w, h, hashes, embedding, Capture(*capture) if capture else None, thumb)
    return FileRecord(key, enc, SkipReason(skip) if skip else None), has_emb


def record_token(rec: FileRecord) -> bytes:
    """A record as opaque bytes (the stored form, its float16 embedding appended), for `record_from_token`.

    What `dedupctl` keeps in its action journal so that a file an undo brings back is re-indexed
    without decoding it again; the format stays the store's own, so a new record field travels with it.
    """
    enc = rec.encoding
    vector = b"" if enc is None or enc.embedding is None else np.asarray(enc.embedding, np.float16).tobytes()
    return msgpack.packb([_pack_record(rec, bool(vector)), vector])


def record_from_token(token: bytes) -> FileRecord:
    """The record `record_token` made; StoreError for bytes that are not one."""
    try:
        packed, vector = msgpack.unpackb(token)
        embedding = np.frombuffer(vector, np.float16).astype(np.float32) if vector else None
        rec, _ = _unpack_record(packed, embedding)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise StoreError(f"not a record token: {exc}") from None
    return rec


#: What decoding a damaged record can raise (msgpack's errors are ValueErrors).
_RECORD_ERRORS = (ValueError, TypeError, KeyError, IndexError, OverflowError, AttributeError, struct.error)


def _hash_value(value: object) -> bytes | None:
    """A hash as its column stores it; None for a value no column could hold (a damaged record)."""
    try:
        return int(value).to_bytes(8, "little")  # type: ignore[call-overload]
    except _RECORD_ERRORS:
        return None


# --------------------------------------------------------------------------------------------- store
class Store:
    """Durable records, secondary keys, embeddings and links in one LMDB environment (see module doc)."""

    def __init__(self, open_env: Callable[[], lmdb.Environment], model_id: str | None, dim: int | None) -> None:
        self._env = env = open_env()
        self._lock = threading.RLock()
        self._state_lock: int | None = None  # the state dir's lock file, held while open (see `open`)
        self._clean_mark: Path | None = None  # where a close records the file it leaves (a checked store only)
        self.model_id = model_id
        self.dim = dim
        self.state_dir: Path | None = None  # set by `open`: where files kept beside the store go
        self._data_file = Path(env.path()) / "data.mdb"
        self._reads = 0  # records and keys read since the mapped pages were last dropped (`_count_reads`)
        self._mapping: tuple[int, list[tuple[int, int]]] | None = None  # (map size, data.mdb's mapping) for `unmap`
        self.stale_readers_cleared = env.reader_check()
        if self.stale_readers_cleared:
            log.info("cleared %d stale LMDB reader slots", self.stale_readers_cleared)
        with env.begin(write=True) as txn:
            self._dbs = {name: env.open_db(name.encode(), txn=txn, dupsort=dup, dupfixed=dup) for name, dup in _DBS}
            self._hash_dbs = {
                name: env.open_db(f"h:{name}".encode(), txn=txn) for name in self._meta(txn, "hash_names", [])
            }

    # ------------------------------------------------------------------ open / close
    @classmethod
    def open(
        cls,
        state_dir: str | os.PathLike[str],
        *,
        map_size: int = DEFAULT_MAP_SIZE,
        encoder_version: str | None = None,
        model_id: str | None = None,
        dim: int | None = None,
        drop_embeddings: bool = False,
        verify_all: bool = False,
    ) -> Store:
        """Open (creating) the store under `state_dir`.

        A schema or encoder version different from the stored one raises StoreVersionMismatch naming
        both; so does a CNN model or dimension change, unless `drop_embeddings` deletes the old
        model's embeddings and links (an explicit migration). `model_id=None` leaves embeddings alone.

        A damaged store raises StoreDamaged: every page is verified and every record checked against its
        secondary keys, unless the file is exactly as this module left it at its last close (same inode,
        size and mtime; `verify_all` checks anyway). Why the exception: the full check reads the whole file
        twice (about 6 s per 100k records), and a crash, a truncation or any write by something else
        changes what was recorded.
        """
        state = Path(state_dir)
        state_lock = _lock_state_dir(state)
        try:
            store_dir = _private_store_dir(state)
            trusted = _closed_cleanly(state) and not verify_all
            problems = [] if trusted else _structure_problems(store_dir)  # before mapping: it could SIGBUS us
            if problems:
                raise _damaged(store_dir, problems)

            def open_env() -> lmdb.Environment:
                return lmdb.open(
                    str(store_dir), map_size=map_size, max_dbs=_MAX_DBS, max_readers=MAX_READERS,
                    sync=True, metasync=True, subdir=True, lock=True, mode=0o600,
                )  # fmt: skip

            try:
                store = cls(open_env, model_id, dim)
            except lmdb.Error as e:
                raise StoreError(f"cannot open store in {state}: {e}") from e
            except _RECORD_ERRORS as e:
                raise _damaged(store_dir, [f"unreadable meta data ({type(e).__name__})"]) from e
        except BaseException:
            os.close(state_lock)
            raise
        store._state_lock = state_lock
        try:
            problems = [] if trusted else store.check()
            if problems:
                raise _damaged(store_dir, problems)
            store._check_versions(encoder_version, drop_embeddings)
            store._retrying(store._index_companions)
            store._retrying(store._index_sizes)
            store._clean_mark = state / _CLEAN_MARK
            store.state_dir = state
        except _RECORD_ERRORS as e:
            store.close()
            raise _damaged(store_dir, [f"unreadable meta data ({type(e).__name__})"]) from e
        except BaseException:
            store.close()
            raise
        return store

    def _check_versions(self, encoder_version: str | None, drop_embeddings: bool) -> None:
        self._retrying(lambda txn: self._check_versions_in(txn, encoder_version, drop_embeddings))

    def _check_versions_in(self, txn: Txn, encoder_version: str | None, drop_embeddings: bool) -> None:
        """Record versions in a new store; refuse (or, for the model, migrate) a mismatch."""
        schema = self._meta(txn, "schema")
        if schema is None:
            self._put_meta(txn, "schema", SCHEMA_VERSION)
        elif schema != SCHEMA_VERSION:
            raise StoreVersionMismatch(f"store schema version {schema} differs from this dedupd's {SCHEMA_VERSION}")
        stored_encoder = self._meta(txn, "encoder")
        if encoder_version is not None:
            if stored_encoder is None:
                self._put_meta(txn, "encoder", encoder_version)
            elif stored_encoder != encoder_version:
                raise StoreVersionMismatch(
                    f"store was encoded by encoder {stored_encoder!r}, this dedupd is {encoder_version!r}"
                )
        if self.model_id is None:
            return
        stored = (self._meta(txn, "model"), self._meta(txn, "dim"))
        if stored[0] is not None and stored != (self.model_id, self.dim):
            if not drop_embeddings:
                raise StoreVersionMismatch(
                    f"store embeddings are from CNN model {stored[0]!r} (dim {stored[1]}), "
                    f"configured model is {self.model_id!r} (dim {self.dim}); "
                    "drop the old embeddings to switch models"
                )
            self._drop_embeddings(txn)
        self._put_meta(txn, "model", self.model_id)
        self._put_meta(txn, "dim", self.dim)

    def _reindex(self, txn: Txn, name: str, entries: Callable[[], Iterator[tuple[bytes, bytes]]], what: str) -> None:
        """Rebuild the index database `name` from `entries` (key, value) unless it is current (its meta
        ``<name>_seq`` is the batch sequence): a store written before it existed, or by such a dedupd since."""
        seq = self._meta(txn, "seq", 0)
        if self._meta(txn, f"{name}_seq") == seq:
            return
        db = self._dbs[name]
        txn.drop(db, delete=False)
        indexed = 0
        for key, value in entries():
            txn.put(key, value, db=db)
            indexed += 1
        if seq:
            log.info("indexed %d %s", indexed, what)
        self._put_meta(txn, f"{name}_seq", seq)
        self._count_reads(indexed)

    def _index_companions(self, txn: Txn) -> None:
        """``companions`` (`_reindex`): one pass over the ``paths`` keys; only records of companion-like names
        (and of paths too long for their key) are read, none is decoded."""

        def entries() -> Iterator[tuple[bytes, bytes]]:
            with txn.cursor(self._dbs["paths"]) as cur:
                for key, rid in cur:
                    if len(key) < _MAX_KEY and not named_like_companion(os.fsdecode(key)):
                        continue
                    rec = _unpack_record(_required(txn, rid, self._dbs["files"]))[0]
                    if _is_companion(rec):
                        yield _companion_key(rec.key.path), rid

        self._reindex(txn, "companions", entries, "sidecars and motion files by their images' names")

    def _index_sizes(self, txn: Txn) -> None:
        """``sizes`` (`_reindex`): one pass over the records, none decoded."""

        def entries() -> Iterator[tuple[bytes, bytes]]:
            with txn.cursor(self._dbs["files"]) as cur:
                for key, raw in cur:
                    rec = _unpack_record(raw)[0]
                    if rec.encoding is not None:
                        yield _SIZE.pack(rec.key.size), key

        self._reindex(txn, "sizes", entries, "encoded records by their file size")

    def _drop_embeddings(self, txn: Txn) -> None:
        log.warning("dropping all embeddings and duplicate links (model changed): they are recomputed")
        txn.drop(self._dbs["emb"], delete=False)
        with txn.cursor(self._dbs["files"]) as cur:
            for key, raw in list(cur):
                rec, has_emb = _unpack_record(raw)
                if has_emb:
                    txn.put(key, _pack_record(rec, False), db=self._dbs["files"])
        txn.drop(self._dbs["links"], delete=False)  # the CNN confirmed or decided every near link
        txn.delete(b"link_rule", db=self._dbs["meta"])

    def close(self) -> None:
        with self._lock:
            self._mapping = None
            self._env.close()
            if self._clean_mark is not None:
                _mark_clean(self._clean_mark)
                self._clean_mark = None
            if self._state_lock is not None:
                os.close(self._state_lock)
                self._state_lock = None

    def unmap(self) -> None:
        """Drop every page of the file this process has mapped (`memory.unmap_file_pages`: they stay in the
        page cache, and a later read maps one again without I/O). Safe beside open transactions: the map is
        read-only (no ``writemap``), so no data is lost, only page-table entries. The map's address is looked
        up once per map size: LMDB maps the file again only when the size changes (`set_mapsize`).

        Why: a bulk read (the index rebuild, a pass over the records, the records of every link) maps most
        of the file (the kernel maps neighbouring cached pages on each fault, and every DB's pages are
        interleaved), which would otherwise stay in the daemon's RSS although it never reads them again.
        """
        with self._lock:
            size = self.map_size  # LMDB maps exactly this much, and maps anew only when it changes
            if self._mapping is None or self._mapping[0] != size:
                self._mapping = size, [m for m in file_mappings(self._data_file) if m[1] == size]
            unmap_file_pages(self._mapping[1])
            self._reads = 0

    def _count_reads(self, count: int) -> None:
        """Note `count` records or keys read; past UNMAP_READS since the last drop, drop the mapped pages."""
        with self._lock:
            self._reads += count
            if self._reads >= UNMAP_READS:
                self.unmap()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ transactions
    def _write(self) -> Txn:
        return self._begin(write=True)

    def _read(self) -> Txn:
        return self._begin(write=False)

    def _begin(self, write: bool) -> Txn:
        """Begin a txn; clears stale reader slots or adopts another process's map growth once if needed."""
        try:
            return self._env.begin(write=write)
        except lmdb.ReadersFullError:
            self._env.reader_check()
        except lmdb.MapResizedError:
            self._env.set_mapsize(0)
            self._mapping = None  # mapped anew (`unmap`)
        return self._env.begin(write=write)

    def _meta(self, txn: Txn, name: str, default: Any = None) -> Any:
        raw = txn.get(name.encode(), db=self._dbs["meta"])
        return default if raw is None else msgpack.unpackb(raw)

    def _put_meta(self, txn: Txn, name: str, value: Any) -> None:
        txn.put(name.encode(), msgpack.packb(value), db=self._dbs["meta"])

    def reader_check(self) -> int:
        """Clear reader slots left by dead processes; returns how many were cleared."""
        with self._lock:
            return self._env.reader_check()

    def reader_pids(self) -> list[int]:
        """Processes holding a reader slot (LMDB's reader table), for diagnostics and tests."""
        with self._lock:
            lines = self._env.readers().splitlines()[1:]
        return [int(line.split()[0]) for line in lines if line.strip()]

    @property
    def map_size(self) -> int:
        return int(self._env.info()["map_size"])

    # ------------------------------------------------------------------ commit
    def commit(self, changes: Sequence[StoreChange], link: LinkFinder | None = None) -> Commit:
        """Apply `changes` in one durable write transaction and return what changed.

        `link`, if given, is called inside the transaction with the Commit (records already have
        their rids) and returns the links to store with them, so records and their links are atomic.
        It may be called again if the map has to grow, so it must not have side effects.
        """
        with self._lock:
            self._ensure_hash_dbs(changes)
            commit = self._retrying(lambda txn: self._commit(txn, changes, link))
            self._count_reads(len(changes))
            return commit

    def _retrying[T](self, work: Callable[[Txn], T]) -> T:
        """Run `work` in one write txn; on MapFullError grow the map and run it again from scratch."""
        while True:
            try:
                with self._write() as txn:
                    return work(txn)
            except lmdb.MapFullError:
                new_size = self.map_size * 2
                log.info("LMDB map full; growing to %d MiB and retrying the transaction", new_size >> 20)
                self._env.set_mapsize(new_size)
                self._mapping = None  # mapped anew (`unmap`)

    def _ensure_hash_dbs(self, changes: Sequence[StoreChange]) -> None:
        """Create DBs for new hash names in their own txn, kept only once it committed (a DB opened in
        an aborted txn is unusable)."""
        names = {n for c in changes if isinstance(c, FileRecord) and c.encoding for n in c.encoding.hashes}
        new = sorted(names - self._hash_dbs.keys())
        if not new:
            return

        def create(txn: Txn) -> dict[str, Any]:
            opened = {name: self._env.open_db(f"h:{name}".encode(), txn=txn) for name in new}
            self._put_meta(txn, "hash_names", sorted([*self._hash_dbs, *new]))
            return opened

        self._hash_dbs.update(self._retrying(create))

    def _commit(self, txn: Txn, changes: Sequence[StoreChange], link: LinkFinder | None) -> Commit:
        added: dict[int, FileRecord] = {}
        removed: list[int] = []
        moved: list[tuple[int, str, str]] = []
        counts: dict[str, int] = self._meta(txn, "counts", {})
        next_rid = self._meta(txn, "next_rid", 1)

        def drop(rid: int) -> None:
            self._delete_record(txn, rid, counts)
            if added.pop(rid, None) is None:
                removed.append(rid)

        for change in changes:
            if isinstance(change, FileRecord):
                old = txn.get(_path_key(change.key.path), db=self._dbs["paths"])
                kept: list[int] = []
                if old is not None:
                    kept = self._ignores_kept(txn, int.from_bytes(old, "big"), change)
                    drop(int.from_bytes(old, "big"))
                rid, next_rid = next_rid, next_rid + 1
                self._put_record(txn, rid, change, counts)
                self._put_ignored(txn, [(rid, other) for other in kept])
                added[rid] = change
            elif isinstance(change, Removal):
                for rid, _ in self._rids_under(txn, change.path):
                    drop(rid)
            elif isinstance(change, Move):
                for rid, path in self._rids_under(txn, change.src):
                    new_path = change.dst + path[len(change.src) :]
                    target = txn.get(_path_key(new_path), db=self._dbs["paths"])
                    if target is not None and int.from_bytes(target, "big") != rid:
                        drop(int.from_bytes(target, "big"))
                    rec = self._rekey(txn, rid, path, new_path)
                    if rid in added:
                        added[rid] = rec
                    else:
                        moved.append((rid, path, new_path))
            elif isinstance(change, Restat):
                found = txn.get(_path_key(change.key.path), db=self._dbs["paths"])
                if found is not None:  # else removed earlier in the batch: nothing to restat
                    rid = int.from_bytes(found, "big")
                    rec = self._restat(txn, rid, change.key)
                    if rid in added:
                        added[rid] = rec
            else:
                raise TypeError(f"not a store change: {change!r}")
        seq = self._meta(txn, "seq", 0) + 1
        self._put_meta(txn, "seq", seq)
        self._put_meta(txn, "companions_seq", seq)
        self._put_meta(txn, "sizes_seq", seq)
        self._put_meta(txn, "next_rid", next_rid)
        self._put_meta(txn, "counts", counts)
        ignored = sorted({(min(r, o), max(r, o)) for r in added for o in self._ignored_of(txn, r)})
        commit = Commit(seq, tuple(added.items()), tuple(removed), tuple(moved), tuple(ignored))
        if link is not None:
            self._put_links(txn, link(commit))
        return commit

    def _put_record(self, txn: Txn, rid: int, rec: FileRecord, counts: dict[str, int]) -> None:
        enc = rec.encoding
        if (enc is None) == (rec.skip is None):
            raise StoreError(f"record for {rec.key.path} needs exactly one of encoding or skip reason")
        key = _rid_key(rid)
        vector = enc.embedding if enc is not None else None
        has_emb = vector is not None
        if vector is not None:
            emb = np.asarray(vector, dtype=np.float16).ravel()
            if self.model_id is None or emb.size != self.dim:
                raise StoreError(
                    f"embedding of {rec.key.path} has dimension {emb.size}; store is set up for "
                    f"model {self.model_id!r} dim {self.dim}"
                )
            txn.put(key, emb.tobytes(), db=self._dbs["emb"])
        txn.put(key, _pack_record(rec, has_emb), db=self._dbs["files"])
        if not txn.put(_path_key(rec.key.path), key, db=self._dbs["paths"], overwrite=False):
            raise StoreError(f"path key collision for {rec.key.path}")
        txn.put(_DEVINO.pack(rec.key.dev, rec.key.inode), key, db=self._dbs["inodes"])
        if _is_companion(rec):
            txn.put(_companion_key(rec.key.path), key, db=self._dbs["companions"])
        if enc is not None:
            txn.put(enc.digest, key, db=self._dbs["digests"])
            txn.put(_SIZE.pack(rec.key.size), key, db=self._dbs["sizes"])
            for name, value in enc.hashes.items():
                txn.put(key, int(value).to_bytes(8, "little"), db=self._hash_dbs[name])
        kind = "encoded" if enc is not None else f"skipped:{rec.skip}"
        counts[kind] = counts.get(kind, 0) + 1

    def _delete_record(self, txn: Txn, rid: int, counts: dict[str, int]) -> None:
        key = _rid_key(rid)
        rec, has_emb = _unpack_record(_required(txn, key, self._dbs["files"]))
        txn.delete(key, db=self._dbs["files"])
        txn.delete(_path_key(rec.key.path), db=self._dbs["paths"])
        txn.delete(_DEVINO.pack(rec.key.dev, rec.key.inode), key, db=self._dbs["inodes"])
        if _is_companion(rec):
            txn.delete(_companion_key(rec.key.path), key, db=self._dbs["companions"])
        if has_emb:
            txn.delete(key, db=self._dbs["emb"])
        if rec.encoding is not None:
            txn.delete(rec.encoding.digest, key, db=self._dbs["digests"])
            txn.delete(_SIZE.pack(rec.key.size), key, db=self._dbs["sizes"])
            for name in rec.encoding.hashes:
                txn.delete(key, db=self._hash_dbs[name])
        links = self._dbs["links"]
        with txn.cursor(links) as cur:
            if cur.set_key(key):
                for value in list(cur.iternext_dup()):
                    other, code, score = _LINK.unpack(value)
                    txn.delete(_rid_key(other), _LINK.pack(rid, code, score), db=links)
                txn.delete(key, db=links)
        for other in self._ignored_of(txn, rid):
            txn.delete(_rid_key(other), key, db=self._dbs["ignored"])
        txn.delete(key, db=self._dbs["ignored"])
        kind = "encoded" if rec.encoding is not None else f"skipped:{rec.skip}"
        counts[kind] -= 1

    def _rekey(self, txn: Txn, rid: int, old: str, new: str) -> FileRecord:
        key = _rid_key(rid)
        before, has_emb = _unpack_record(_required(txn, key, self._dbs["files"]))
        rec = replace(before, key=replace(before.key, path=new))
        txn.put(key, _pack_record(rec, has_emb), db=self._dbs["files"])
        txn.delete(_path_key(old), db=self._dbs["paths"])
        txn.put(_path_key(new), key, db=self._dbs["paths"])
        if _is_companion(before):
            txn.delete(_companion_key(old), key, db=self._dbs["companions"])
        if _is_companion(rec):
            txn.put(_companion_key(new), key, db=self._dbs["companions"])
        return rec

    def _restat(self, txn: Txn, rid: int, key: FileKey) -> FileRecord:
        """Give record `rid` a new stat identity (same path), keeping everything else."""
        rkey = _rid_key(rid)
        rec, has_emb = _unpack_record(_required(txn, rkey, self._dbs["files"]))
        txn.delete(_DEVINO.pack(rec.key.dev, rec.key.inode), rkey, db=self._dbs["inodes"])
        txn.put(_DEVINO.pack(key.dev, key.inode), rkey, db=self._dbs["inodes"])
        if rec.encoding is not None and rec.key.size != key.size:  # never for the same bytes; kept exact anyway
            txn.delete(_SIZE.pack(rec.key.size), rkey, db=self._dbs["sizes"])
            txn.put(_SIZE.pack(key.size), rkey, db=self._dbs["sizes"])
        rec = replace(rec, key=key)
        txn.put(rkey, _pack_record(rec, has_emb), db=self._dbs["files"])
        return rec

    def _rids_under(self, txn: Txn, path: str) -> list[tuple[int, str]]:
        """(rid, path) of the record at `path` and of every record below `path/`."""
        found = []
        exact = txn.get(_path_key(path), db=self._dbs["paths"])
        if exact is not None:
            found.append((int.from_bytes(exact, "big"), path))
        prefix = _path_key(path.rstrip("/") + "/")[: _MAX_KEY - 16]
        with txn.cursor(self._dbs["paths"]) as cur:
            if cur.set_range(prefix):
                for key, value in cur:
                    if not key.startswith(prefix):
                        break
                    if len(key) < _MAX_KEY:  # the key is the whole path
                        found.append((int.from_bytes(value, "big"), os.fsdecode(key)))
                        continue
                    full = os.fsdecode(msgpack.unpackb(txn.get(value, db=self._dbs["files"]))[0])
                    if is_under(full, path) and full != path:
                        found.append((int.from_bytes(value, "big"), full))
        return found

    # ------------------------------------------------------------------ links
    def _method_code(self, txn: Txn, method: str) -> int:
        methods: list[str] = self._meta(txn, "methods", [])
        if method not in methods:
            if len(methods) == 256:
                raise StoreError("too many link methods")
            methods.append(method)
            self._put_meta(txn, "methods", methods)
        return methods.index(method)

    def _put_links(self, txn: Txn, links: Iterable[Link]) -> None:
        db, files = self._dbs["links"], self._dbs["files"]
        for ln in links:
            if ln.a == ln.b or txn.get(_rid_key(ln.a), db=files) is None or txn.get(_rid_key(ln.b), db=files) is None:
                raise StoreError(f"link between missing or identical records: {ln}")
            code = self._method_code(txn, ln.method)
            txn.put(_rid_key(ln.a), _LINK.pack(ln.b, code, ln.score), db=db)
            txn.put(_rid_key(ln.b), _LINK.pack(ln.a, code, ln.score), db=db)

    def replace_links(self, links: Iterable[Link], rule: dict[str, Any]) -> None:
        """Swap every stored link for `links`, computed with `rule` (the matcher's thresholds)."""
        links = list(links)

        def replace(txn: Txn) -> None:
            txn.drop(self._dbs["links"], delete=False)
            self._put_links(txn, links)
            self._put_meta(txn, "link_rule", rule)

        with self._lock:
            self._retrying(replace)
            self._count_reads(len(links))

    def link_rule(self) -> dict[str, Any] | None:
        """The rule the stored links were computed with; None before any `replace_links`."""
        with self._lock, self._read() as txn:
            return self._meta(txn, "link_rule")

    def links(self) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray, np.ndarray]:
        """Every link once (a < b) as arrays: a, b, method names, method code per link, score."""
        with self._lock, self._read() as txn:
            methods = self._meta(txn, "methods", [])
            with txn.cursor(self._dbs["links"]) as cur:
                raw = b"".join(k + v for k, v in cur)
        rows = np.frombuffer(raw, dtype=[("a", ">u8"), ("b", ">u8"), ("code", "u1"), ("score", ">f4")])
        self._count_reads(len(rows))
        rows = rows[rows["a"] < rows["b"]]
        return (
            rows["a"].astype(np.int64), rows["b"].astype(np.int64), methods,
            rows["code"].copy(), rows["score"].astype(np.float32),
        )  # fmt: skip

    def links_of(self, rid: int) -> list[tuple[int, str, float]]:
        """(other rid, method, score) for every link of `rid`."""
        with self._lock, self._read() as txn:
            methods = self._meta(txn, "methods", [])
            with txn.cursor(self._dbs["links"]) as cur:
                packed = list(cur.iternext_dup()) if cur.set_key(_rid_key(rid)) else []
        self._count_reads(1 + len(packed))
        return [(other, methods[code], score) for other, code, score in map(_LINK.unpack, packed)]

    # ------------------------------------------------------------------ ignored pairs
    def _ignored_of(self, txn: Txn, rid: int) -> list[int]:
        with txn.cursor(self._dbs["ignored"]) as cur:
            if not cur.set_key(_rid_key(rid)):
                return []
            return [int.from_bytes(v, "big") for v in cur.iternext_dup()]

    def _ignores_kept(self, txn: Txn, old: int, new: FileRecord) -> list[int]:
        """The ignored partners of record `old` that its replacement keeps: those of an unchanged file."""
        before = _unpack_record(_required(txn, _rid_key(old), self._dbs["files"]))[0].encoding
        same = before is not None and new.encoding is not None and before.digest == new.encoding.digest
        return self._ignored_of(txn, old) if same else []

    def _put_ignored(self, txn: Txn, pairs: Iterable[tuple[int, int]]) -> int:
        added = 0
        for a, b in pairs:
            added += txn.put(_rid_key(a), _rid_key(b), db=self._dbs["ignored"], dupdata=False)
            txn.put(_rid_key(b), _rid_key(a), db=self._dbs["ignored"], dupdata=False)
        return added

    def ignore(self, pairs: Iterable[tuple[int, int]]) -> int:
        """Declare pairs of records not duplicates: stored, and their links deleted, in one transaction.

        Returns how many pairs were not ignored before. Unknown or identical rids raise StoreError.
        """
        pairs = [(min(a, b), max(a, b)) for a, b in pairs]

        def store(txn: Txn) -> int:
            files, links = self._dbs["files"], self._dbs["links"]
            for a, b in pairs:
                if a == b or txn.get(_rid_key(a), db=files) is None or txn.get(_rid_key(b), db=files) is None:
                    raise StoreError(f"cannot ignore a pair of missing or identical records: {a}, {b}")
                for mine, other in ((a, b), (b, a)):
                    with txn.cursor(links) as cur:
                        doomed = [v for v in cur.iternext_dup() if _LINK.unpack(v)[0] == other] \
                            if cur.set_key(_rid_key(mine)) else []  # fmt: skip
                    for value in doomed:
                        txn.delete(_rid_key(mine), value, db=links)
            return self._put_ignored(txn, pairs)

        with self._lock:
            return self._retrying(store)

    def unignore(self, pairs: Iterable[tuple[int, int]]) -> int:
        """Forget that pairs of records were declared not duplicates; returns how many were. The caller
        links them again."""
        pairs = [(min(a, b), max(a, b)) for a, b in pairs]

        def forget(txn: Txn) -> int:
            removed = 0
            for a, b in pairs:
                removed += txn.delete(_rid_key(a), _rid_key(b), db=self._dbs["ignored"])
                txn.delete(_rid_key(b), _rid_key(a), db=self._dbs["ignored"])
            return removed

        with self._lock:
            return self._retrying(forget)

    def ignored(self) -> list[tuple[int, int]]:
        """Every ignored pair once, as (a, b) with a < b."""
        with self._lock, self._read() as txn, txn.cursor(self._dbs["ignored"]) as cur:
            pairs = [(int.from_bytes(k, "big"), int.from_bytes(v, "big")) for k, v in cur]
        self._count_reads(len(pairs))
        return [(a, b) for a, b in pairs if a < b]

    # ------------------------------------------------------------------ reads
    def get(self, path: str, *, embedding: bool = False) -> FileRecord | None:
        """The record stored for `path` (with its embedding when asked), or None."""
        found = self.lookup(path, embedding=embedding)
        return None if found is None else found[1]

    def lookup(self, path: str, *, embedding: bool = False) -> tuple[int, FileRecord] | None:
        """(rid, record) for `path`, or None."""
        with self._lock, self._read() as txn:
            key = txn.get(_path_key(path), db=self._dbs["paths"])
            rec = None if key is None else self._record(txn, key, embedding)
        self._count_reads(1)
        return None if key is None or rec is None or rec.key.path != path else (int.from_bytes(key, "big"), rec)

    def records(self, rids: Iterable[int], *, embedding: bool = False) -> dict[int, FileRecord]:
        """Records of the given rids (missing ones are left out)."""
        with self._lock, self._read() as txn:
            out = {}
            for rid in rids:
                self._count_reads(1)  # scattered reads: dropped as they go, not only at the end
                raw = txn.get(_rid_key(rid), db=self._dbs["files"])
                if raw is not None:
                    out[rid] = self._record(txn, _rid_key(rid), embedding, raw)
        return out

    def _record(self, txn: Txn, key: bytes, embedding: bool, raw: bytes | None = None) -> FileRecord:
        rec, has_emb = _unpack_record(raw if raw is not None else _required(txn, key, self._dbs["files"]))
        if embedding and has_emb and rec.encoding is not None:
            vec = np.frombuffer(_required(txn, key, self._dbs["emb"]), dtype=np.float16).astype(np.float32)
            rec = replace(rec, encoding=replace(rec.encoding, embedding=vec))
        return rec

    def iter_records(self, under: str | None = None) -> Iterator[tuple[int, FileRecord]]:
        """Every (rid, record) in rid order, optionally only those at or under a directory.

        Reads in short transactions of a few hundred records, so iterating never pins old pages.
        """
        start = b""
        while True:
            with self._lock, self._read() as txn, txn.cursor(self._dbs["files"]) as cur:
                if not cur.set_range(start):
                    return
                page = []
                for key, raw in cur:
                    page.append((int.from_bytes(key, "big"), _unpack_record(raw)[0]))
                    if len(page) == _PAGE:
                        break
            self._count_reads(len(page))
            for rid, rec in page:
                if under is None or is_under(rec.key.path, under):
                    yield rid, rec
            if len(page) < _PAGE:
                return
            start = _rid_key(page[-1][0] + 1)

    def companions(self, paths: Iterable[str]) -> dict[str, list[Companion]]:
        """Each path's companions in the store (`dedupd.companions.attached`: its sidecars and motion files, by
        name); a path without any is left out."""
        out: dict[str, list[Companion]] = {}
        db, files = self._dbs["companions"], self._dbs["files"]
        read = 0
        with self._lock, self._read() as txn, txn.cursor(db) as cur:
            for path in paths:
                read += 1
                if named_like_companion(path) or not cur.set_key(_companion_key(path)):
                    continue
                names = [os.fsdecode(msgpack.unpackb(_required(txn, rid, files))[0]) for rid in cur.iternext_dup()]
                read += len(names)
                if found := attached(path, names):
                    out[path] = found
        self._count_reads(read)
        return out

    def rids_for_digest(self, digest: bytes) -> list[int]:
        """Records whose content digest is `digest` (exact duplicates)."""
        with self._lock, self._read() as txn, txn.cursor(self._dbs["digests"]) as cur:
            rids = [int.from_bytes(v, "big") for v in cur.iternext_dup()] if cur.set_key(digest) else []
        self._count_reads(1 + len(rids))
        return rids

    def of_size(self, size: int, limit: int = 8) -> list[FileRecord]:
        """Up to `limit` encoded records of files of `size` bytes, the newest first, with their embeddings."""
        with self._lock, self._read() as txn, txn.cursor(self._dbs["sizes"]) as cur:
            keys = [cur.value()] if cur.set_key(_SIZE.pack(size)) and cur.last_dup() else []
            while keys and len(keys) < limit and cur.prev_dup():
                keys.append(cur.value())
            found = [self._record(txn, key, True) for key in keys]
        self._count_reads(1 + len(keys))
        return found

    def exact_groups(self) -> list[list[int]]:
        """Records sharing a content digest, as rid lists (two or more each), in one pass."""
        with self._lock, self._read() as txn, txn.cursor(self._dbs["digests"]) as cur:
            by_digest: dict[bytes, list[int]] = {}
            for digest, rid in cur:
                by_digest.setdefault(digest, []).append(int.from_bytes(rid, "big"))
        self._count_reads(len(by_digest))
        return [rids for rids in by_digest.values() if len(rids) > 1]

    def paths_for_digest(self, digest: bytes) -> list[str]:
        """Paths whose content digest is `digest`."""
        return sorted(r.key.path for r in self.records(self.rids_for_digest(digest)).values())

    def paths_for_inode(self, dev: int, inode: int) -> list[str]:
        """Paths recorded for (dev, inode): one, or several for hard links."""
        with self._lock, self._read() as txn, txn.cursor(self._dbs["inodes"]) as cur:
            keys = list(cur.iternext_dup()) if cur.set_key(_DEVINO.pack(dev, inode)) else []
            paths = sorted(_unpack_record(_required(txn, k, self._dbs["files"]))[0].key.path for k in keys)
        self._count_reads(1 + len(keys))
        return paths

    def paths(self, rids: Iterable[int]) -> dict[int, str]:
        """Path of each given rid that still exists (decodes only the path: groups list many)."""
        files = self._dbs["files"]
        out = {}
        with self._lock, self._read() as txn:
            for rid in rids:
                self._count_reads(1)  # scattered reads: dropped as they go
                raw = txn.get(rid.to_bytes(8, "big"), db=files)
                if raw is not None:
                    out[rid] = os.fsdecode(msgpack.unpackb(raw)[0])
        return out

    def rids_under(self, path: str) -> dict[int, str]:
        """rid -> path of the record at `path` and of every record below it (a prefix scan)."""
        with self._lock, self._read() as txn:
            found = dict(self._rids_under(txn, path))
        self._count_reads(1 + len(found))
        return found

    def hash_names(self) -> list[str]:
        return sorted(self._hash_dbs)

    def hash_column(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(rids, hashes) of every record with hash `name`, in rid order, read in one pass."""
        if name not in self._hash_dbs:
            return np.empty(0, np.int64), np.empty(0, np.uint64)
        with self._lock, self._read() as txn, txn.cursor(self._hash_dbs[name]) as cur:
            raw = b"".join(k + v for k, v in cur)
        rows = np.frombuffer(raw, dtype=[("rid", ">u8"), ("hash", "<u8")])
        self._count_reads(len(rows))
        return rows["rid"].astype(np.int64), rows["hash"].astype(np.uint64)

    def embeddings(self) -> tuple[np.ndarray, np.ndarray]:
        """(rids, float16 matrix rows) of every stored embedding, in rid order."""
        dim = self.dim or 0
        with self._lock, self._read() as txn, txn.cursor(self._dbs["emb"]) as cur:
            raw = b"".join(k + v for k, v in cur)
        rows = np.frombuffer(raw, dtype=[("rid", ">u8"), ("vec", "<f2", (dim,))])
        self._count_reads(len(rows))
        return rows["rid"].astype(np.int64), rows["vec"].copy()

    def embeddings_of(self, rids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(float16 rows, found) of some records' embeddings, zeros where a record has none."""
        dim = self.dim or 0
        rows = np.zeros((len(rids), dim), np.float16)
        found = np.zeros(len(rids), bool)
        with self._lock, self._read() as txn:
            for i, rid in enumerate(np.asarray(rids).tolist()):
                raw = txn.get(_rid_key(rid), db=self._dbs["emb"])
                if raw is not None:
                    rows[i], found[i] = np.frombuffer(raw, np.float16), True
        self._count_reads(len(rids))
        return rows, found

    def embedding_stamp(self) -> dict[str, object]:
        """The embeddings' state: model, dimension, batch sequence and count. Any commit moves the
        sequence, so an index saved with this stamp is current exactly while the stamp is unchanged."""
        with self._lock, self._read() as txn:
            count = txn.stat(self._dbs["emb"])["entries"]
            return {"model": self.model_id, "dim": self.dim, "seq": self._meta(txn, "seq", 0), "count": count}

    def export(self, method: str) -> Iterator[tuple[str, str | np.ndarray]]:
        """imagededup-format encodings: (path, 16-digit hex) for a hash method, (path, vector) for "cnn"."""
        for _, rec in self.iter_records():
            if rec.encoding is None:
                continue
            if method == "cnn":
                with_vec = self.get(rec.key.path, embedding=True)
                if with_vec is not None and with_vec.encoding and with_vec.encoding.embedding is not None:
                    yield rec.key.path, with_vec.encoding.embedding
            elif method in rec.encoding.hashes:
                yield rec.key.path, format(rec.encoding.hashes[method], "016x")

    def seq(self) -> int:
        """Sequence number of the last committed batch."""
        with self._lock, self._read() as txn:
            return self._meta(txn, "seq", 0)

    def counts(self) -> dict[str, int]:
        """Records per kind: "encoded" and "skipped:<reason>"."""
        with self._lock, self._read() as txn:
            return {k: v for k, v in self._meta(txn, "counts", {}).items() if v}

    # ------------------------------------------------------------------ repair (see `repair`)
    def _restore(self, records: Sequence[tuple[int, FileRecord]]) -> int:
        """Put salvaged records under their own rids; a later record of a path replaces an earlier one.
        Returns how many were replaced that way."""
        if not records:
            return 0
        with self._lock:
            self._ensure_hash_dbs([rec for _, rec in records])
            return self._retrying(lambda txn: self._restore_in(txn, records))

    def _restore_in(self, txn: Txn, records: Sequence[tuple[int, FileRecord]]) -> int:
        counts: dict[str, int] = self._meta(txn, "counts", {})
        next_rid = self._meta(txn, "next_rid", 1)
        replaced = 0
        for rid, rec in records:
            old = txn.get(_path_key(rec.key.path), db=self._dbs["paths"])
            for doomed in {int.from_bytes(old, "big")} if old is not None else set():
                self._delete_record(txn, doomed, counts)
                replaced += 1
            if txn.get(_rid_key(rid), db=self._dbs["files"]) is not None:  # a damaged key repeated a rid
                self._delete_record(txn, rid, counts)
                replaced += 1
            self._put_record(txn, rid, rec, counts)
            next_rid = max(next_rid, rid + 1)
        self._put_meta(txn, "next_rid", next_rid)
        self._put_meta(txn, "counts", counts)
        self._put_meta(txn, "companions_seq", self._meta(txn, "seq", 0))
        self._put_meta(txn, "sizes_seq", self._meta(txn, "seq", 0))
        return replaced

    def _restore_ignored(self, pairs: Iterable[tuple[int, int]]) -> int:
        """Keep the salvaged ignored pairs whose two records were kept; returns how many."""
        wanted = sorted({(min(a, b), max(a, b)) for a, b in pairs if a != b})

        def put(txn: Txn) -> int:
            files = self._dbs["files"]
            whole = [(a, b) for a, b in wanted
                     if txn.get(_rid_key(a), db=files) is not None and txn.get(_rid_key(b), db=files) is not None]
            self._put_ignored(txn, whole)
            return len(whole)

        with self._lock:
            return self._retrying(put)

    # ------------------------------------------------------------------ consistency
    def check(self) -> list[str]:
        """Every inconsistency between records and their secondary keys (empty when sound).

        Never raises for what a damaged file holds: an unreadable page or record is a problem in the list.
        """
        with self._lock:
            try:
                return self._check()
            except (lmdb.Error, *_RECORD_ERRORS) as e:  # a damaged page, or meta data that does not decode
                return [f"cannot read the store: {type(e).__name__}: {e}"]
            finally:
                self.unmap()  # it read every page

    def _expect(self, txn: Txn, key: bytes, raw: bytes, expect: dict[str, set[tuple[bytes, bytes]]],
                expect_hash: dict[str, set[bytes]], tally: dict[str, int]) -> list[str]:
        """Add the secondary keys record `key` implies to `expect`, its kind to `tally`; its hash column problems."""
        problems = []
        rec, has_emb = _unpack_record(raw)
        kind = "encoded" if rec.encoding is not None else f"skipped:{rec.skip}"
        tally[kind] = tally.get(kind, 0) + 1
        expect["paths"].add((_path_key(rec.key.path), key))
        expect["inodes"].add((_DEVINO.pack(rec.key.dev, rec.key.inode), key))
        if _is_companion(rec):
            expect["companions"].add((_companion_key(rec.key.path), key))
        if has_emb:
            expect["emb"].add((key, b""))
        if rec.encoding is not None:
            expect["digests"].add((rec.encoding.digest, key))
            expect["sizes"].add((_SIZE.pack(rec.key.size), key))
            for name, value in rec.encoding.hashes.items():
                column = self._hash_dbs.get(name)
                if column is None or txn.get(key, db=column) != _hash_value(value):
                    problems.append(f"rid {int.from_bytes(key, 'big')}: hash {name!r} missing or wrong")
                if column is not None:
                    expect_hash[name].add(key)
        return problems

    def _check(self) -> list[str]:
        problems: list[str] = []
        with self._read() as txn:
            db = self._dbs
            expect: dict[str, set[tuple[bytes, bytes]]] = {
                n: set() for n in ("paths", "digests", "inodes", "emb", "companions", "sizes")}
            expect_hash: dict[str, set[bytes]] = {n: set() for n in self._hash_dbs}
            tally: dict[str, int] = {}
            for key, raw in txn.cursor(db["files"]):
                try:
                    problems += self._expect(txn, key, raw, expect, expect_hash, tally)
                except _RECORD_ERRORS as e:
                    problems.append(f"rid {int.from_bytes(key, 'big')}: unreadable record ({type(e).__name__})")
            counted = {kind: n for kind, n in self._meta(txn, "counts", {}).items() if n}
            if counted != tally:  # what status reports as indexed and skipped
                problems.append(f"counts: the store says {counted}, its records are {tally}")
            # a store written before ``companions`` or ``sizes`` (or since by a dedupd without them) has them
            # rebuilt at open
            seq = self._meta(txn, "seq", 0)
            rebuilt = [name for name in ("companions", "sizes") if self._meta(txn, f"{name}_seq") == seq]
            for name in ("paths", "digests", "inodes", *rebuilt):
                actual = set(txn.cursor(db[name]))
                if actual != expect[name]:
                    problems.append(f"{name}: {len(actual - expect[name])} stray, {len(expect[name] - actual)} missing")
            emb = {(k, b"") for k in txn.cursor(db["emb"]).iternext(values=False)}
            if emb != expect["emb"]:
                problems.append("emb: embeddings and records disagree")
            for name, hdb in self._hash_dbs.items():
                if set(txn.cursor(hdb).iternext(values=False)) != expect_hash[name]:
                    problems.append(f"h:{name}: stray hash entries")
            links = set(txn.cursor(db["links"]))
            for key, packed in links:
                if len(packed) != _LINK.size:
                    problems.append(f"link of {int.from_bytes(key, 'big')}: {len(packed)} bytes")
                    continue
                other, code, score = _LINK.unpack(packed)
                if (_rid_key(other), _LINK.pack(int.from_bytes(key, "big"), code, score)) not in links:
                    problems.append(f"link {int.from_bytes(key, 'big')}->{other} has no reverse")
                if txn.get(key, db=db["files"]) is None or txn.get(_rid_key(other), db=db["files"]) is None:
                    problems.append(f"link {int.from_bytes(key, 'big')}->{other} to a missing record")
            ignored = set(txn.cursor(db["ignored"]))
            for key, other in ignored:
                rid = int.from_bytes(key, "big")
                if (other, key) not in ignored:
                    problems.append(f"ignored pair {rid}->{int.from_bytes(other, 'big')} has no reverse")
                if txn.get(key, db=db["files"]) is None:
                    problems.append(f"ignored pair of a missing record {rid}")
        return problems


# --------------------------------------------------------------------------------------------- damage and repair
#: What to do about a damaged store, in every message that reports one.
REPAIR_HINT = ("stop dedupd and run `dedupd check-store --repair`: it keeps what can be read, sets the damaged "
               "store aside, and the daemon re-encodes the rest from the files on disk")
_REPAIRED = "store.repaired"  # a finished repair not yet renamed into place (see `repair`)
_CLEAN_MARK = "store.closed"  # data.mdb's inode, size and mtime at the last close (see `Store.open`)
_WORK = ".repair"
_PROBE_LIMIT = 1 << 64


def _structure_problems(store_dir: Path) -> list[str]:
    """What py-lmdb's offline verifier finds wrong in data.mdb; [] for a sound file or a store not created yet.

    The verifier reads the file with plain reads and never hands it to the engine, so a truncated or
    overwritten file is a list of problems here, not a SIGBUS (the engine maps the file and trusts its page
    numbers). An empty data.mdb is damage too: LMDB would silently start an empty store over it.
    """
    data = store_dir / "data.mdb"
    if not data.exists():
        return ["data.mdb is missing (lock.mdb is there, so the store existed)"] if (store_dir / "lock.mdb").exists() \
            else []  # fmt: skip
    try:
        problems = lmdb_verify.verify(str(store_dir), subdir=True)
    except lmdb_verify.VerifyError as e:
        problems = [str(e)]
    except OSError as e:
        problems = [f"cannot read it: {e.strerror}"]
    return [f"data.mdb ({data.stat().st_size} bytes): {problem}" for problem in problems]


def _identity(data: Path) -> list[int] | None:
    try:
        st = data.stat()
    except OSError:
        return None
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]


def _mark_clean(mark: Path) -> None:
    """Record data.mdb as a close leaves it (see `Store.open`); best effort: without it the next open checks."""
    identity = _identity(mark.parent / "store" / "data.mdb")
    if identity is None:
        return
    temporary = mark.with_name(mark.name + ".tmp")
    try:
        temporary.write_bytes(msgpack.packb(identity))
        temporary.chmod(0o600)
        temporary.rename(mark)
    except OSError as e:
        log.warning("cannot record the clean close in %s: %s", mark, e.strerror)


def _closed_cleanly(state: Path) -> bool:
    """Whether data.mdb is exactly as the last close left it. The record is used up: a crash after this
    open leaves none, so the open after it checks everything."""
    mark = state / _CLEAN_MARK
    try:
        recorded = msgpack.unpackb(mark.read_bytes())
    except (OSError, *_RECORD_ERRORS):
        return False
    finally:
        mark.unlink(missing_ok=True)
    return bool(recorded == _identity(state / "store" / "data.mdb"))


def _damaged(store_dir: Path, problems: list[str]) -> StoreDamaged:
    more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
    error = StoreDamaged(f"the store {store_dir} is damaged: {problems[0]}{more}; {REPAIR_HINT}")
    error.problems = problems  # type: ignore[attr-defined]
    return error


def diagnose(state_dir: str | os.PathLike[str]) -> list[str] | None:
    """What is wrong with the store in `state_dir` ([] when sound, None when there is none yet); changes
    nothing. Raises StoreError when another process holds the state dir."""
    if not (Path(state_dir) / "store").exists():
        return None
    try:
        Store.open(state_dir, verify_all=True).close()
    except StoreDamaged as e:
        return list(e.problems)  # type: ignore[attr-defined]
    return []


@dataclass(frozen=True, slots=True)
class Repair:
    """What `repair` did: records and ignored pairs carried over, records left for a re-encode, notes."""

    kept: int
    dropped: int
    ignored: int
    damaged_copy: Path | None
    notes: tuple[str, ...]


def repair(state_dir: str | os.PathLike[str]) -> Repair:
    """Rebuild the store in `state_dir` from what its damaged file still holds.

    Every record that can be read whole (with its embedding and its ignored pairs) is kept under its rid;
    links are recomputed by the catalog at the next start and files whose record was lost are re-encoded by
    the daemon's start-up scan. The salvage reads the damaged file in a child process (a damaged page can
    SIGBUS or crash the engine: the child dies, what it sent is kept) from a copy padded to the size its
    meta page claims. The damaged store is kept as `store.damaged-<time>`; nothing is replaced unless the
    new store was written and closed.
    """
    state = Path(state_dir)
    state_lock = _lock_state_dir(state)
    try:
        return _repair(state)
    finally:
        os.close(state_lock)


def _repair(state: Path) -> Repair:
    work = state / _WORK
    shutil.rmtree(work, ignore_errors=True)
    (work / "salvage").mkdir(mode=0o700, parents=True)
    try:
        damaged = state / "store"
        if (damaged / "data.mdb").exists():
            _padded_copy(damaged / "data.mdb", work / "salvage" / "data.mdb")
        kept, dropped, ignored, notes = _rebuild(work)
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        (work / "store").rename(state / _REPAIRED)
        damaged_copy = state / f"store.damaged-{stamp}" if damaged.exists() else None
        if damaged_copy is not None:
            damaged.rename(damaged_copy)
        (state / _REPAIRED).rename(damaged)
        log.warning("store rebuilt: %d records kept, %d left to re-encode; the damaged store is %s",
                    kept, dropped, damaged_copy)
        return Repair(kept, dropped, ignored, damaged_copy, tuple(notes))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _padded_copy(source: Path, target: Path) -> None:
    """Copy data.mdb and extend the copy with zeros to the size its meta pages claim (plus slack), so the
    engine reads zeros (an error it reports) where a truncated file would SIGBUS it."""
    shutil.copyfile(source, target)
    with open(source, "rb") as handle:
        head = handle.read(2 * 65536)
    needed = 0
    for magic_at in range(0, min(len(head), 65536), 4):
        if head[magic_at:magic_at + 4] == struct.pack("=I", 0xBEEFC0DE):
            page_size = struct.unpack_from("=I", head, magic_at + 24)[0]  # the free DB's md_pad is the page size
            last_page = struct.unpack_from("=Q", head, magic_at + 120)[0] if len(head) >= magic_at + 128 else 0
            if 0 < page_size <= 65536 and last_page < 1 << 40:
                needed = max(needed, (last_page + 1) * page_size)
    os.truncate(target, max(target.stat().st_size, needed) + (1 << 20))


def _rebuild(work: Path) -> tuple[int, int, int, list[str]]:
    """Write the new store at `work/store` from the child's salvage stream; (kept, dropped, ignored, notes)."""
    errors = (work / "salvage.err").open("w+b")  # a file, not a pipe: the child must never block on it
    child = subprocess.Popen([sys.executable, "-c", "import sys; from dedupd.store import _salvage; "
                              "_salvage(sys.argv[1])", str(work / "salvage")],
                             stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, stderr=errors)
    assert child.stdout is not None
    items = msgpack.Unpacker(child.stdout, raw=False, use_list=True)
    notes: list[str] = []
    dropped = ignored = 0
    new: Store | None = None
    batch: list[tuple[int, FileRecord]] = []
    pairs: list[tuple[int, int]] = []
    finished = False
    meta: dict[str, Any] = {}
    try:
        for item in items:
            kind = item[0]
            if kind == "meta":
                meta = item[1]
                new = Store.open(work, encoder_version=meta.get("encoder"), model_id=meta.get("model"),
                                 dim=meta.get("dim"))
            elif kind == "rec" and new is not None:
                restored = _restorable(item[1], item[2], item[3], new, meta.get("hash_names"))
                if restored is None:
                    dropped += 1
                else:
                    batch.append(restored)
                if len(batch) >= 1000:
                    dropped += new._restore(batch)
                    batch = []
            elif kind == "drop":
                dropped += 1
            elif kind == "ign":
                pairs.append((int.from_bytes(item[1], "big"), int.from_bytes(item[2], "big")))
            elif kind == "note":
                notes.append(item[1])
            elif kind == "end":
                finished = True
        if new is None:
            new = Store.open(work)
        dropped += new._restore(batch)
        ignored = new._restore_ignored(pairs)
        kept = sum(new.counts().values())
    finally:
        child.wait()
        if new is not None:
            new.close()
    if not finished:
        code = child.returncode
        errors.seek(0)
        said = errors.read().decode(errors="replace").strip().splitlines()
        why = (f"signal {-code}" if code < 0 else f"exit {code}") + (f": {said[-1]}" if said else "")
        notes.append(f"the salvage stopped early at a damaged page ({why}); what it read before is kept")
    errors.close()
    return kept, dropped, ignored, notes


def _restorable(key: bytes, raw: bytes, emb: bytes | None, new: Store, hash_names: list[str] | None
                ) -> tuple[int, FileRecord] | None:
    """(rid, record) when the salvaged record is whole and fits the new store, else None (re-encoded later)."""
    try:
        rec, has_emb = _unpack_record(raw)
        rid = int.from_bytes(key, "big")
        enc = rec.encoding
        sound = len(key) == 8 and os.path.isabs(rec.key.path) and (enc is None) != (rec.skip is None) and all(
            isinstance(v, int) for v in (rec.key.dev, rec.key.inode, rec.key.size, rec.key.mtime_ns))
        if enc is not None:
            sound = sound and isinstance(enc.digest, bytes) and all(
                isinstance(v, int) and 0 <= v < 1 << 64 for v in enc.hashes.values())
            sound = sound and (hash_names is None or sorted(enc.hashes) == sorted(hash_names))
            if has_emb:
                if emb is None or new.dim is None or new.model_id is None or len(emb) != 2 * new.dim:
                    return None
                rec = replace(rec, encoding=replace(enc, embedding=np.frombuffer(emb, dtype=np.float16)))
        return (rid, rec) if sound else None
    except _RECORD_ERRORS:
        return None


def _salvage(copy_dir: str) -> None:
    """Child process of `repair`: stream every readable meta value, record (with its embedding) and ignored
    pair of the damaged copy at `copy_dir` to stdout as msgpack items, then "end"."""
    out = sys.stdout.buffer

    def emit(*item: Any) -> None:
        out.write(msgpack.packb(item))
        out.flush()

    try:
        env = lmdb.open(copy_dir, readonly=True, lock=False, max_dbs=_MAX_DBS, subdir=True,
                        map_size=DEFAULT_MAP_SIZE)
        dbs = {}
        for name, dup in _DBS:
            if name == "companions":  # not read: the new store indexes the records it is given
                continue
            try:
                dbs[name] = env.open_db(name.encode(), create=False, dupsort=dup, dupfixed=dup)
            except lmdb.Error as e:
                emit("note", f"{name}: cannot open ({e})")
    except lmdb.Error as e:
        emit("note", f"the damaged file cannot be opened at all ({e}); nothing could be kept")
        emit("meta", {})
        emit("end")
        return
    meta = {}
    for name in ("encoder", "model", "dim", "hash_names", "next_rid"):
        try:
            with env.begin() as txn:
                raw = txn.get(name.encode(), db=dbs["meta"])
            meta[name] = None if raw is None else msgpack.unpackb(raw)
        except (lmdb.Error, KeyError, *_RECORD_ERRORS) as e:
            emit("note", f"meta {name}: unreadable ({type(e).__name__})")
    emit("meta", meta)
    for name in meta.get("hash_names") or []:
        try:
            dbs[f"h:{name}"] = env.open_db(f"h:{name}".encode(), create=False)
        except (lmdb.Error, *_RECORD_ERRORS) as e:
            emit("note", f"h:{name}: cannot open ({type(e).__name__})")
    next_rid = meta.get("next_rid")
    end: int = next_rid if isinstance(next_rid, int) else _PROBE_LIMIT
    if "files" in dbs:
        for txn, key, raw in _readable(env, dbs["files"], emit, "files", end):
            emb = None
            if "emb" in dbs:
                try:
                    emb = txn.get(key, db=dbs["emb"])
                except lmdb.Error:
                    pass
            if _corroborated(txn, dbs, key, raw) is not False:
                emit("rec", key, raw, emb)
            else:
                emit("drop", key)
    if "ignored" in dbs:
        for _, key, other in _readable(env, dbs["ignored"], emit, "ignored", end):
            emit("ign", key, other)
    emit("end")


def _same_hash(txn: Txn, column: Any, key: bytes, value: object) -> Callable[[], bool]:
    return lambda: txn.get(key, db=column) == _hash_value(value)


def _corroborated(txn: Txn, dbs: dict[str, Any], key: bytes, raw: bytes) -> bool | None:
    """Whether the damaged store's own secondary keys (path, inode, digest, hash columns) agree with the
    record: False when one readable copy disagrees (a flipped byte in the record), None when none can be read.
    Why: LMDB has no checksums, and a record that decodes may still hold a flipped path or hash."""
    try:
        rec, has_emb = _unpack_record(raw)
    except _RECORD_ERRORS:
        return False
    if not isinstance(has_emb, bool):  # a record cut by a truncated page still decodes, its zeros as integers
        return False
    checks: list[tuple[str, Callable[[], bool]]] = [
        ("paths", lambda: txn.get(_path_key(rec.key.path), db=dbs["paths"]) == key),
        ("inodes", lambda: txn.cursor(dbs["inodes"]).set_key_dup(_DEVINO.pack(rec.key.dev, rec.key.inode), key)),
    ]
    if rec.encoding is not None:
        enc = rec.encoding
        checks.append(("digests", lambda: txn.cursor(dbs["digests"]).set_key_dup(enc.digest, key)))
        checks += [(f"h:{name}", _same_hash(txn, dbs.get(f"h:{name}"), key, value))
                   for name, value in enc.hashes.items()]
    seen = None
    for db, agrees in checks:
        if db not in dbs:
            continue
        try:
            if not agrees():
                return False
            seen = True
        except (lmdb.Error, *_RECORD_ERRORS):
            continue
    return seen


def _readable(env: lmdb.Environment, db: Any, emit: Callable[..., None], name: str, end: int
              ) -> Iterator[tuple[Txn, bytes, bytes]]:
    """Every readable (txn, key, value) of a rid-keyed DB in key order, rids below `end` only. A damaged page
    is skipped by probing ahead (1, 2, 4, ... rids) until a key reads again; a key out of order or out of
    range (a damaged key) is left out."""
    start, step, bad_from = 0, 0, 0
    while start < end:
        try:
            with env.begin() as txn, txn.cursor(db) as cur:
                if not cur.set_range(_rid_key(start)):
                    break
                last = start
                for key, value in cur:
                    rid = int.from_bytes(key, "big") if len(key) == 8 else -1
                    if not last <= rid < end:
                        continue
                    if step:
                        emit("note", f"{name}: rids {bad_from} to {rid - 1} are on damaged pages; skipped")
                    last, step = rid, 0
                    yield txn, key, value
                    start = rid + 1
            return
        except lmdb.Error as e:
            if not step:
                log.debug("%s: damaged at rid %d: %s", name, start, e)
                bad_from = start
            step = max(1, 2 * step)
            start += step
    if step:
        emit("note", f"{name}: rids from {bad_from} on are on damaged pages; skipped")
