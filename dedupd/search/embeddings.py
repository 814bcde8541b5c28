"""The live index's embedding search: the exact scan for small libraries, the ANN index for large ones.

Below `ANN_MIN_ROWS` embeddings the exact scan (`vectors.EmbeddingIndex`, one numkong pass over the
float16 matrix) is cheaper than a graph search and is all there is. From that size on the approximate
index (`ann.AnnIndex`) answers, and the float16 matrix is not kept in memory: the rows that judge a
candidate pair are read from the store (`RowSource.embeddings_of`), so the index only proposes.

The approximate index is saved beside the store (`path`) with the store's embedding stamp and loaded at
open when the stamps match. When they do not (a crash, an older build, a library that just grew past the
threshold) the exact scan serves while a background thread builds the index from a snapshot of the
matrix; changes made meanwhile are journaled and replayed, then the index replaces the scan and is
saved. Opening is therefore never slower than the exact scan's load. When more than a quarter of the
index's rows were removed since it laid its rows out (their codes still take memory and scan time), or
the library has doubled since its cells were fitted, the index is rebuilt the same way from the store,
the old one answering meanwhile.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

import numpy as np

from dedupd.search.ann import AnnIndex
from dedupd.search.vectors import EmbeddingIndex

log = logging.getLogger(__name__)

#: From this many embeddings on, threshold queries go to the ANN index (BENCHMARKS.md "Embedding search":
#: the exact scan costs ~0.04 ms per 1,000 rows, ~2 ms here; below it an index would save little).
ANN_MIN_ROWS = 50_000
_BUILD_BLOCK = 1_000  # rows added between checks of a close request (a stop waits for one block)
_BUILD_LOG_EVERY = 100_000  # a progress line (a 1M build took 60-77 s here, a 10M one would take minutes)
_BUILD_NICE = 10  # the background build yields the CPUs to the daemon's own work


class RowSource(Protocol):
    """Where the embeddings live (the store): every row, some rows, and a stamp of their state."""

    def embeddings(self) -> tuple[np.ndarray, np.ndarray]: ...

    def embeddings_of(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

    def embedding_stamp(self) -> Mapping[str, object]: ...


type _Change = tuple[np.ndarray, np.ndarray | None]  # (keys, rows) added, or (keys, None) removed


class EmbeddingSearch:
    """Key -> float16 unit vector with threshold queries, exact below ANN_MIN_ROWS and approximate above."""

    def __init__(self, dim: int, source: RowSource, path: Path | None, min_rows: int = ANN_MIN_ROWS) -> None:
        self.dim = dim
        self._source = source
        self._path = path
        self._min_rows = min_rows
        self._lock = threading.RLock()
        self._scan: EmbeddingIndex | None = None
        self._ann: AnnIndex | None = None
        self._count = 0
        self._dirty = False  # the ANN index changed since it was loaded or saved
        self._swapped = False  # a background build swapped its index in: `checkpoint` saves it
        self._journal: list[_Change] | None = None  # changes during a background build
        self._builder: threading.Thread | None = None
        self._closing = threading.Event()

    @classmethod
    def open(cls, dim: int, source: RowSource, path: Path | None, min_rows: int = ANN_MIN_ROWS) -> EmbeddingSearch:
        """The saved ANN index when it matches the store, else the exact scan (building the index in the
        background when the library is large enough)."""
        search = cls(dim, source, path, min_rows)
        stamp = source.embedding_stamp()
        search._count = int(stamp["count"])  # type: ignore[call-overload]
        if path is not None and search._count >= min_rows:
            search._ann = AnnIndex.load(path, stamp)
            if search._ann is not None:
                log.info("embedding index loaded from %s (%d rows)", path, len(search._ann))
                return search
        search._scan = EmbeddingIndex.from_arrays(*source.embeddings())
        search._count = len(search._scan)
        if path is not None:
            AnnIndex.discard(path)
        if search._count >= min_rows:
            search._start_build()
        return search

    def __len__(self) -> int:
        return self._count

    @property
    def approximate(self) -> bool:
        """True when queries go to the ANN index."""
        return self._ann is not None

    @property
    def building(self) -> bool:
        return self._builder is not None

    # ------------------------------------------------------------------ updates
    def insert_many(self, keys: np.ndarray, rows: np.ndarray) -> None:
        keys = np.asarray(keys, np.int64)
        rows = np.asarray(rows, np.float16).reshape(len(keys), self.dim)
        with self._lock:
            self._count += len(keys)
            if self._scan is not None:
                self._scan.insert_many(keys, rows)
            if self._ann is not None:
                self._ann.add(keys, rows)
                self._dirty = True
            if self._journal is not None:
                self._journal.append((keys, rows))
            elif self._ann is None and self._count >= self._min_rows:
                self._start_build()
            elif self._ann is not None and len(self._ann) > 2 * self._ann.fitted_rows:
                self._start_build()  # cells fitted to a library half this size

    def delete(self, key: int) -> bool:
        with self._lock:
            present = self._scan.delete(key) if self._scan is not None else False
            if self._ann is not None:
                present = self._ann.remove(np.array([key])) > 0 or present
                self._dirty = True
            if self._journal is not None:
                self._journal.append((np.array([key], np.int64), None))
            self._count -= int(present)
            ann = self._ann
            if ann is not None and self._journal is None and ann.removed > max(1024, len(ann) // 4):
                self._start_build()
            return present

    # ------------------------------------------------------------------ queries
    def rows_of(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(float16 rows, found) of `keys`: from the matrix while the scan serves, else from the store."""
        with self._lock:
            if self._scan is not None:
                return self._scan.rows_of(keys)
        return self._source.embeddings_of(np.asarray(keys, np.int64))

    def search_many(self, queries: np.ndarray, min_similarity: float) -> list[np.ndarray]:
        """Per query row, the keys that may be at least `min_similarity` similar (exact above the matrix;
        the caller judges every candidate on exact rows either way)."""
        queries = np.asarray(queries).reshape(-1, self.dim)
        with self._lock:
            if self._ann is not None:
                return self._ann.search_many(queries, min_similarity)
            assert self._scan is not None
            return [keys for keys, _ in self._scan.search_many(queries, min_similarity)]

    # ------------------------------------------------------------------ the background build
    def _start_build(self) -> None:
        """Build a fresh ANN index in a thread; the current search answers until it is swapped in."""
        if self._builder is not None or self._closing.is_set():
            return
        self._journal = []
        if self._scan is not None:
            keys, rows, alive = self._scan.live_view()

            def snapshot() -> tuple[np.ndarray, np.ndarray]:
                return keys[alive], rows[alive]
        else:
            snapshot = self._source.embeddings  # read in the thread; replaying the journal is idempotent
        self._builder = threading.Thread(target=self._build, args=(snapshot,), name="ann-build", daemon=True)
        self._builder.start()

    def _build(self, snapshot: Callable[[], tuple[np.ndarray, np.ndarray]]) -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), _BUILD_NICE)  # inherited by its workers
        except OSError:
            pass
        try:
            keys, rows = snapshot()
            log.info("building the embedding index (%d rows) in the background", len(keys))
            index = AnnIndex.train(rows, len(rows))
            for first in range(0, len(keys), _BUILD_BLOCK):
                if self._closing.is_set():
                    return
                index.add(keys[first : first + _BUILD_BLOCK], rows[first : first + _BUILD_BLOCK])
                if (first + _BUILD_BLOCK) % _BUILD_LOG_EVERY == 0:
                    log.info("embedding index: %d of %d rows added", first + _BUILD_BLOCK, len(keys))
            del keys, rows
            with self._lock:
                if self._closing.is_set():
                    return
                for changed, added in self._journal or []:
                    index.remove(changed)
                    if added is not None:
                        index.add(changed, added)
                self._ann, self._scan = index, None
                self._dirty = self._swapped = True
            log.info("embedding index built: %d rows, %.0f MiB", len(index), index.nbytes / 2**20)
        except Exception:
            log.exception("building the embedding index failed; the current search stays")
        finally:
            with self._lock:
                self._journal = self._builder = None

    def wait_built(self, timeout: float | None = None) -> bool:
        """Wait for a background build (tests, benchmarks); True when none is running."""
        builder = self._builder
        if builder is not None:
            builder.join(timeout)
        return self._builder is None

    # ------------------------------------------------------------------ persistence
    def checkpoint(self) -> bool:
        """Save the index a background build has just swapped in; True when it did (the matrix it
        replaced is garbage now). Call it where the store and this index agree (the catalog's lock,
        after a batch is followed): the file is stamped with the store's state of that moment."""
        with self._lock:
            if not self._swapped:
                return False
            self._swapped = False
            self._save()
            return True

    def _save(self) -> None:
        if self._path is None or self._ann is None or not self._dirty:
            return
        try:
            self._ann.save(self._path, self._source.embedding_stamp())
            self._dirty = False
        except OSError as exc:  # the next open rebuilds it
            log.warning("cannot save the embedding index to %s: %s", self._path, exc)

    def close(self) -> None:
        """Stop a background build and save the ANN index if it changed (before the store closes, where
        the store and this index agree)."""
        self._closing.set()
        builder = self._builder
        if builder is not None:
            builder.join()
        with self._lock:
            self._save()
