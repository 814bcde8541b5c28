"""Approximate index of the CNN embeddings: 512-bit sign codes in k-means cells, saved to a file.

Each row is kept as a 512-bit code, the signs of its projections on 512 fixed random directions
(SimHash, Charikar 2002: two codes differ in a share acos(cosine) / pi of their bits, binomially, whatever
the data), and filed under the nearest of `cells` centroids (spherical k-means on a sample of the rows at
build). A threshold query ranks the centroids by similarity to the query, reads the codes of the best
`probe_share` of the cells plus every code added since the last layout, and returns the keys whose code is
within CODE_SIGMAS binomial deviations of the distance expected at the threshold, first on the code's first
256 bits, then (those within) on all 512: candidates for the caller to judge on the exact float16 rows.
So the index can lose a pair (a partner in a cell not probed, or a code ~3 sigmas unlucky: ~0.1-0.2 % of
the pairs at the threshold) but never invents one. Memory: 64 B of code, 8 B of key and 4 B of cell a
row (~77 MiB at 1M rows; no vectors).

Why not a graph (usearch HNSW, the previous design): at 1M rows on this project's bench it could not reach
99 % recall of the exact scan's pairs at the matcher's low threshold (0.62) below 38 ms a query, and built
in ~35 minutes; a flat scan of the codes costs ~8 ms at 1M here. See BENCHMARKS.md "Archive".

Layout: the codes are column-major (one uint64 array per 64 bits) and sorted by cell, so a probed cell is a
contiguous run of each column, read as a slice; rows added since are a tail scanned whole, laid into their
cells (which also drops removed rows) once it passes TAIL_SHARE of the rest, at the next query or save.

The saved file is stamped: a JSON sidecar holds the caller's stamp (the store's state when the index was
saved) and the file's size; `load` returns None unless both match, so a stale or torn file is rebuilt.
"""

from __future__ import annotations

import json
import logging
import math
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

#: Code length, and the leading part every probed row is compared on: only the rows within its radius are
#: compared on the whole code (a tighter radius: fewer candidates for the caller to read and judge).
BITS = 512
FIRST_BITS = 256
#: A Hamming radius is the expected distance at the query's threshold plus this many binomial standard
#: deviations: a pair at the threshold is missed with probability ~0.1 % at each of the two (one-sided 3.1 sigma).
CODE_SIGMAS = 3.1
#: Share of the cells a query reads (the nearest centroids first) and their number (sqrt(rows) up to
#: MAX_CELLS): at 1M photo-like rows with real photographs as queries, 256 cells probed at 25 % found 99.4 %
#: of the exact pairs (1,000 cells: 98.5 %; 64 cells: 98.8 %) for ~0.38x a flat scan's time with 256-bit
#: codes, 99.7 % with these (BENCHMARKS.md "Archive"). A query's cost grows with the library: a quarter of the codes.
PROBE_SHARE = 0.25
MAX_CELLS = 256
KMEANS_SAMPLE = 256  # training rows per cell
KMEANS_ROUNDS = 8
TAIL_SHARE = 1 / 16  # the unsorted tail is laid into cells past this share of the sorted rows
_SEED = 0x5EED_C0DE
_BLOCK = 50_000  # rows converted to float32 at once
_FORMAT = 2


class AnnIndex:
    """Key (non-negative int) -> sign code in a cell, with threshold queries returning candidate keys."""

    def __init__(self, projection: np.ndarray, centroids: np.ndarray, fitted_rows: int) -> None:
        self.dim = projection.shape[0]
        self.fitted_rows = fitted_rows  # the library's size when the cells were fitted
        self._projection = projection.astype(np.float32)  # (dim, BITS)
        self._centroids = centroids.astype(np.float32)  # (cells, dim), unit rows
        self.probe_share = PROBE_SHARE
        words = BITS // 64
        self._words = [np.empty(0, np.uint64) for _ in range(words)]  # column-major codes, sorted part + tail
        self._keys = np.empty(0, np.int64)
        self._cells = np.empty(0, np.int32)
        self._alive = np.empty(0, bool)
        self._size = 0  # filled positions (capacity is the arrays' length)
        self._sorted = 0  # positions [0, _sorted) are laid out by cell
        self._starts = np.zeros(len(self._centroids) + 1, np.int64)  # cell c: positions [starts[c], starts[c+1])
        self._key_order = np.empty(0, np.int64)  # argsort of the sorted part's keys (removals look keys up)
        self.removed = 0  # removed rows still holding a position

    @classmethod
    def train(cls, sample: np.ndarray, rows: int) -> AnnIndex:
        """An empty index for a library of `rows` rows, its cells (sqrt(rows), at most MAX_CELLS) fitted to
        `sample` (any float rows)."""
        rng = np.random.default_rng(_SEED)
        projection = rng.standard_normal((sample.shape[1], BITS)).astype(np.float32)
        cells = max(1, min(MAX_CELLS, math.isqrt(max(1, rows)), len(sample)))
        if len(sample) > KMEANS_SAMPLE * cells:
            sample = sample[np.sort(rng.choice(len(sample), KMEANS_SAMPLE * cells, replace=False))]
        sample = _unit(np.asarray(sample, np.float32))
        if not len(sample):
            return cls(projection, np.zeros((1, projection.shape[0]), np.float32), rows)
        centroids = sample[rng.choice(len(sample), cells, replace=False)]
        for _ in range(KMEANS_ROUNDS):  # spherical k-means; a cell left empty keeps its centroid
            assigned = np.argmax(sample @ centroids.T, axis=1)
            sums = np.zeros_like(centroids)
            np.add.at(sums, assigned, sample)
            filled = np.bincount(assigned, minlength=cells) > 0
            centroids[filled] = _unit(sums[filled])
        return cls(projection, centroids, rows)

    @classmethod
    def build(cls, keys: np.ndarray, rows: np.ndarray) -> AnnIndex:
        index = cls.train(rows, len(rows))
        index.add(keys, rows)
        return index

    def __len__(self) -> int:
        return self._size - self.removed

    @property
    def cells(self) -> int:
        return len(self._centroids)

    @property
    def nbytes(self) -> int:
        arrays: list[np.ndarray] = [*self._words, self._keys, self._cells, self._alive, self._key_order]
        return sum(a.nbytes for a in arrays) + self._centroids.nbytes + self._projection.nbytes

    # ------------------------------------------------------------------ updates
    def add(self, keys: np.ndarray, rows: np.ndarray) -> None:
        """Add rows (any float dtype, any norm) under new keys, at the tail."""
        keys = np.asarray(keys, np.int64)
        rows = np.asarray(rows).reshape(len(keys), self.dim)
        self._reserve(self._size + len(keys))
        for first in range(0, len(keys), _BLOCK):
            block = rows[first : first + _BLOCK].astype(np.float32)
            at = slice(self._size, self._size + len(block))
            for word, column in zip(self._codes(block).T, self._words, strict=True):
                column[at] = word
            self._cells[at] = np.argmax(block @ self._centroids.T, axis=1)
            self._keys[at] = keys[first : first + _BLOCK]
            self._alive[at] = True
            self._size += len(block)

    def remove(self, keys: np.ndarray) -> int:
        """Remove keys (absent ones are ignored); how many were present."""
        keys = np.asarray(keys, np.int64)
        if not len(keys) or not self._size:
            return 0
        hits = [np.flatnonzero(np.isin(self._keys[self._sorted : self._size], keys)) + self._sorted]
        if self._sorted:
            sorted_keys = self._keys[self._key_order]
            at = np.minimum(np.searchsorted(sorted_keys, keys), self._sorted - 1)
            hits.append(self._key_order[at[sorted_keys[at] == keys]])
        positions = np.concatenate(hits)
        positions = positions[self._alive[positions]]
        self._alive[positions] = False
        self.removed += len(positions)
        return len(positions)

    # ------------------------------------------------------------------ queries
    def search_many(self, queries: np.ndarray, min_similarity: float) -> list[np.ndarray]:
        """Per query row, the keys whose code is near enough for a cosine of at least `min_similarity`
        (within CODE_SIGMAS), among the probed cells and the tail: candidates to judge on exact rows."""
        queries = np.asarray(queries, np.float32).reshape(-1, self.dim)
        if self._size - self._sorted > max(1024, self._sorted * TAIL_SHARE):
            self._lay_out()
        radii = radius(min_similarity, FIRST_BITS), radius(min_similarity, BITS)
        codes = self._codes(queries)
        ranked = queries @ self._centroids.T
        probes = min(self.cells, max(1, math.ceil(self.probe_share * self.cells)))
        out = []
        for code, sims in zip(codes, ranked, strict=True):
            cells = np.argpartition(-sims, probes - 1)[:probes] if probes < self.cells else np.arange(self.cells)
            found = self._near(code, np.sort(cells), radii)
            out.append(self._keys[found[self._alive[found]]])
        return out

    def _near(self, code: np.ndarray, cells: np.ndarray, radii: tuple[int, int]) -> np.ndarray:
        """The positions in `cells` (sorted) and in the tail whose code is within radii[0] of `code` on the first
        FIRST_BITS, radii[1] on all. The first stage reads each probed cell's run of a column as a slice (one
        copy of contiguous words, not a gather by position: 0.67-0.69x the CPU of the gather at 1M)."""
        starts, ends = self._starts[cells], self._starts[cells + 1]
        if self._size > self._sorted:  # rows added since the layout: every query reads them
            starts, ends = np.append(starts, self._sorted), np.append(ends, self._size)
        spans = list(zip(starts.tolist(), ends.tolist(), strict=True))
        lengths = ends - starts
        offsets = np.cumsum(lengths) - lengths  # where each span begins among the rows read
        first = FIRST_BITS // 64
        distances = np.zeros(int(lengths.sum()), np.uint16)
        for column, word in zip(self._words[:first], code[:first], strict=True):
            distances += np.bitwise_count(np.concatenate([column[a:b] for a, b in spans]) ^ word)
        close = np.flatnonzero(distances <= radii[0])
        span = np.searchsorted(offsets, close, side="right") - 1
        at = starts[span] + (close - offsets[span])
        distances = distances[close] + self._distances(code[first:], at, self._words[first:])
        return at[distances <= radii[1]]

    @staticmethod
    def _distances(code: np.ndarray, at: np.ndarray, columns: list[np.ndarray]) -> np.ndarray:
        """Hamming distances between the words of `code` and those of `columns` at positions `at`."""
        total = np.zeros(len(at), np.uint16)
        for column, word in zip(columns, code, strict=True):
            total += np.bitwise_count(column[at] ^ word)
        return total

    def _codes(self, rows: np.ndarray) -> np.ndarray:
        """(n, BITS // 64) uint64 sign codes of float32 rows."""
        return np.packbits(rows @ self._projection > 0, axis=1).view(np.uint64)

    # ------------------------------------------------------------------ layout
    def _reserve(self, size: int) -> None:
        if size <= len(self._keys):
            return
        capacity = max(size, len(self._keys) * 5 // 4, 1024)

        def grown(a: np.ndarray) -> np.ndarray:
            out = np.empty(capacity, a.dtype)
            out[: self._size] = a[: self._size]
            return out

        self._words = [grown(w) for w in self._words]
        self._keys, self._cells, self._alive = grown(self._keys), grown(self._cells), grown(self._alive)

    def _lay_out(self) -> None:
        """Sort the live rows by cell (the tail joins its cells, removed rows go)."""
        live = np.flatnonzero(self._alive[: self._size])
        order = live[np.argsort(self._cells[live], kind="stable")]
        self._words = [w[order] for w in self._words]
        self._keys, self._cells = self._keys[order], self._cells[order]
        self._size = self._sorted = len(order)
        self._alive = np.ones(self._size, bool)
        self._starts = np.concatenate([[0], np.cumsum(np.bincount(self._cells, minlength=self.cells))])
        self._key_order = np.argsort(self._keys, kind="stable")
        self.removed = 0

    # ------------------------------------------------------------------ persistence
    def save(self, path: Path, stamp: Mapping[str, object]) -> None:
        """Write the index and its stamp, each by rename over the old one (a crash leaves a stale pair)."""
        self._lay_out()
        path.parent.mkdir(parents=True, exist_ok=True)
        stamp_path = _stamp_path(path)
        stamp_path.unlink(missing_ok=True)  # no stamp until both are written: a torn pair is never trusted
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("wb") as stream:
            np.savez(stream, projection=self._projection, centroids=self._centroids, keys=self._keys,
                     cells=self._cells, words=np.stack(self._words), fitted_rows=self.fitted_rows)  # fmt: skip
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)
        meta = {"stamp": dict(stamp), "size": path.stat().st_size, "dim": self.dim, "format": _FORMAT}
        tmp_stamp = stamp_path.with_name(stamp_path.name + ".tmp")
        with tmp_stamp.open("w") as stream:
            stream.write(json.dumps(meta, sort_keys=True))
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp_stamp, stamp_path)

    @classmethod
    def load(cls, path: Path, stamp: Mapping[str, object]) -> AnnIndex | None:
        """The saved index when its stamp equals `stamp` (and the file is whole), else None (logged why)."""
        try:
            meta = json.loads(_stamp_path(path).read_text())
            if meta.get("stamp") != json.loads(json.dumps(dict(stamp))) or meta.get("format") != _FORMAT:
                log.info("embedding index %s is stale (saved at %s, store at %s)", path, meta.get("stamp"), stamp)
                return None
            if path.stat().st_size != meta.get("size"):
                log.warning("embedding index %s has the wrong size: ignored", path)
                return None
            with np.load(path) as saved:
                projection, centroids = saved["projection"], saved["centroids"]
                keys, cells, words = saved["keys"], saved["cells"], saved["words"]
                fitted_rows = int(saved["fitted_rows"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            log.warning("embedding index %s is unreadable (%s): ignored", path, exc)
            return None
        shapes = (projection.shape, words.shape, cells.shape)
        if shapes != ((meta.get("dim"), BITS), (BITS // 64, len(keys)), keys.shape):
            log.warning("embedding index %s does not match its stamp: ignored", path)
            return None
        index = cls(projection, centroids, fitted_rows)
        index._words, index._keys, index._cells = list(words), keys, cells
        index._alive = np.ones(len(keys), bool)
        index._size = len(keys)
        index._lay_out()
        return index

    @staticmethod
    def discard(path: Path) -> None:
        """Delete a saved index and its stamp (a store that no longer matches it)."""
        _stamp_path(path).unlink(missing_ok=True)
        path.unlink(missing_ok=True)


def radius(min_similarity: float, bits: int) -> int:
    """The Hamming radius on `bits` bits of a threshold query: the expected distance at `min_similarity`
    plus CODE_SIGMAS."""
    share = math.acos(max(-1.0, min(1.0, min_similarity))) / math.pi
    return int(bits * share + CODE_SIGMAS * math.sqrt(bits * share * (1 - share)))


def _unit(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.where(norms > 0, norms, 1)


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")
