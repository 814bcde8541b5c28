"""Approximate nearest-neighbour index of the CNN embeddings: usearch HNSW over int8 vectors, saved to a file.

Why usearch: it deletes (faiss's HNSW cannot; its IVF needs trained centroids and a large `nprobe` for
the matcher's low threshold), saves, loads and memory-maps one file, quantises to int8 (a quarter of the
float32 size: ~0.7 KiB a record with the graph at 512-d), and uses numkong's kernels like the exact scan.
See BENCHMARKS.md "Embedding index" for the measured comparison with faiss.

The index only proposes candidates: every pair it returns is judged by the caller on the exact float16
rows, so quantisation and graph misses can lose a pair (recall, measured) but never invent one.

usearch behaviours this module works around (2.26):
- `Index.search(radius=...)` is not applied: a threshold query is a top-k query whose k grows (x4) while
  the k-th hit still reaches the threshold;
- `add()` on a `view()`ed (memory-mapped) index crashes: a saved index is loaded (copied into memory);
- `remove()` frees no memory and leaves the node in the graph: `removed` counts them so the owner can
  rebuild when they pile up.

The saved file is stamped: a JSON sidecar holds the caller's stamp (the store's state when the index was
saved) and the file's size; `load` returns None unless both match, so a stale or torn file is rebuilt.

usearch is imported on first use (~0.2 s): a library below the ANN threshold never needs it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from usearch.index import Index

log = logging.getLogger(__name__)

#: HNSW parameters. connectivity 16 and expansion_add 128 are usearch's defaults; expansion_search 1024
#: (default 64): at 200k embeddings 256 missed 5-7 % of the exact scan's pairs at the matcher's low threshold
#: (0.62), 1024 misses 0.3-0.5 % at about 3x the query time (BENCHMARKS.md "Archive"): recall comes first.
CONNECTIVITY = 16
EXPANSION_ADD = 128
EXPANSION_SEARCH = 1024
#: int8 similarities differ from the float16 ones by up to ~0.02: candidates are taken this far below.
QUANTISATION_SLACK = 0.05
_FIRST_K = 16
_ADD_BLOCK = 50_000  # rows converted to float32 at once while adding


class AnnIndex:
    """Key (non-negative int) -> quantised unit vector, with threshold queries returning candidate keys."""

    def __init__(self, dim: int, index: Index | None = None, removed: int = 0) -> None:
        self.dim = dim
        if index is None:
            from usearch.index import Index

            index = Index(ndim=dim, metric="cos", dtype="i8", connectivity=CONNECTIVITY,
                          expansion_add=EXPANSION_ADD, expansion_search=EXPANSION_SEARCH)  # fmt: skip
        # the search and add efforts are not saved in the file: a restored index would search with ef 64.
        # usearch defines both setters after both getters, which mypy reads as read-only properties.
        index.expansion_search = EXPANSION_SEARCH  # type: ignore[misc]
        index.expansion_add = EXPANSION_ADD  # type: ignore[misc]
        self._index = index
        self.removed = removed  # removed keys still holding memory and graph nodes

    @classmethod
    def build(cls, keys: np.ndarray, rows: np.ndarray, threads: int = 0) -> AnnIndex:
        index = cls(rows.shape[1] if rows.ndim == 2 else 0)
        index.add(keys, rows, threads=threads)
        return index

    def __len__(self) -> int:
        return len(self._index)

    @property
    def expansion_search(self) -> int:
        """The search effort (HNSW ef): EXPANSION_SEARCH unless a benchmark sweeps it."""
        return int(self._index.expansion_search)

    @expansion_search.setter
    def expansion_search(self, effort: int) -> None:
        self._index.expansion_search = effort  # type: ignore[misc]

    @property
    def nbytes(self) -> int:
        return int(self._index.memory_usage)

    def add(self, keys: np.ndarray, rows: np.ndarray, threads: int = 0) -> None:
        """Add rows (any float dtype; normalised by the cosine metric) under new keys."""
        keys = np.asarray(keys, np.uint64)
        rows = np.asarray(rows).reshape(len(keys), self.dim)
        for first in range(0, len(keys), _ADD_BLOCK):
            block = slice(first, first + _ADD_BLOCK)
            self._index.add(keys[block], rows[block].astype(np.float32), threads=threads)

    def remove(self, keys: np.ndarray) -> int:
        """Remove keys (absent ones are ignored); how many were present."""
        keys = np.asarray(keys, np.uint64)
        present = keys[np.asarray(self._index.contains(keys), bool)] if len(keys) else keys
        if len(present):
            self._index.remove(present)
            self.removed += len(present)
        return len(present)

    def search_many(self, queries: np.ndarray, min_similarity: float) -> list[np.ndarray]:
        """Per query row, the keys whose quantised similarity is at least `min_similarity` minus
        QUANTISATION_SLACK: candidates to judge on exact rows."""
        queries = np.asarray(queries, np.float32).reshape(-1, self.dim)
        floor = min_similarity - QUANTISATION_SLACK
        out: list[np.ndarray] = [np.empty(0, np.int64)] * len(queries)
        pending, k, total = np.arange(len(queries)), _FIRST_K, len(self._index)
        while len(pending) and total:
            count = min(k, total)
            found = self._index.search(queries[pending], count)
            with np.errstate(invalid="ignore"):  # unused result slots hold sentinels
                keys = _padded(np.asarray(found.keys, np.int64), len(pending), count)
                sims = 1.0 - _padded(np.asarray(found.distances, np.float64), len(pending), count, fill=2.0)
            # one query comes back as `Matches` (no counts, only its valid hits), several as `BatchMatches`
            counts = np.asarray(getattr(found, "counts", [len(found.keys)])).reshape(-1)
            valid = np.arange(keys.shape[1])[None, :] < counts[:, None]
            again = valid[:, -1] & (sims[:, -1] >= floor) & (count < total)
            for row in np.flatnonzero(~again):
                hits = valid[row] & (sims[row] >= floor)
                out[int(pending[row])] = keys[row][hits]
            pending, k = pending[again], k * 4
        return out

    # ------------------------------------------------------------------ persistence
    def save(self, path: Path, stamp: Mapping[str, object]) -> None:
        """Write the index and its stamp, each by rename over the old one (a crash leaves a stale pair)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        stamp_path = _stamp_path(path)
        stamp_path.unlink(missing_ok=True)  # no stamp until both are written: a torn pair is never trusted
        tmp = path.with_name(path.name + ".tmp")
        self._index.save(str(tmp))
        _fsync(tmp)
        os.replace(tmp, path)
        meta = {"stamp": dict(stamp), "size": path.stat().st_size, "removed": self.removed, "dim": self.dim}
        tmp_stamp = stamp_path.with_name(stamp_path.name + ".tmp")
        tmp_stamp.write_text(json.dumps(meta, sort_keys=True))
        _fsync(tmp_stamp)
        os.replace(tmp_stamp, stamp_path)

    @classmethod
    def load(cls, path: Path, stamp: Mapping[str, object]) -> AnnIndex | None:
        """The saved index when its stamp equals `stamp` (and the file is whole), else None (logged why)."""
        try:
            meta = json.loads(_stamp_path(path).read_text())
            if meta.get("stamp") != json.loads(json.dumps(dict(stamp))):
                log.info("embedding index %s is stale (saved at %s, store at %s)", path, meta.get("stamp"), stamp)
                return None
            if path.stat().st_size != meta.get("size"):
                log.warning("embedding index %s has the wrong size: ignored", path)
                return None
            from usearch.index import Index

            index = Index.restore(str(path), view=False)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, RuntimeError) as exc:
            log.warning("embedding index %s is unreadable (%s): ignored", path, exc)
            return None
        if index is None or index.ndim != meta.get("dim"):
            log.warning("embedding index %s does not match its stamp: ignored", path)
            return None
        return cls(int(index.ndim), index, int(meta.get("removed", 0)))

    @staticmethod
    def discard(path: Path) -> None:
        """Delete a saved index and its stamp (a store that no longer matches it)."""
        _stamp_path(path).unlink(missing_ok=True)
        path.unlink(missing_ok=True)


def _padded(values: np.ndarray, rows: int, width: int, fill: float = 0) -> np.ndarray:
    """A search result as a (rows, width) array (a single query's result is shorter when it found less)."""
    if values.size == rows * width:
        return values.reshape(rows, width)
    out = np.full((rows, width), fill, values.dtype)
    out[0, : values.size] = values.ravel()
    return out


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
