"""Exact Hamming range search over 64-bit hashes by multi-index hashing (Norouzi et al., CVPR 2012).

Why: at the default threshold (10 bits of 64) a BK-tree still visits a large share of its nodes, so a
query costs about as much as a scan. Multi-index hashing splits each hash into m disjoint substrings;
two hashes within distance r agree to within floor(r / m) bits on at least one substring (pigeonhole),
so the candidates are the entries of the few buckets within that small radius of each query substring.
Candidates are then checked exactly (XOR + popcount), so results are exact, never approximate.

Layout: per substring a counting-sorted table (bucket start offsets + slots), all numpy. Inserts go to a
pending tail that is scanned linearly and merged into the tables when it grows; deletes clear an alive
flag (`keycolumn.KeyColumn`) and dead slots are dropped at the next merge. Keys must be inserted in
increasing order (the store's record ids are), so a key is found by binary search without a per-key map.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import numpy as np

from dedupd.search.keycolumn import KeyColumn

_BITS = 64
_SCAN_SHARE = 0.25  # a plan that would check more than this share of entries scans instead
_MIN_TABLES = 4096  # below this many entries a scan is as fast as the tables (unless chunks are fixed)
_BLOCK_CELLS = 1 << 20  # candidate checks per block of a many-query search: bounds its temporaries (~30 MiB)


@cache
def _masks(width: int, radius: int) -> np.ndarray:
    """Every `width`-bit XOR mask with at most `radius` bits set."""
    every = np.arange(1 << width, dtype=np.uint32)
    return every[np.bitwise_count(every) <= radius]


def chunk_count(n: int) -> int:
    """Substrings for n entries: Norouzi's 64 / log2(n) is ~3 from 1M up, but 3 substrings need 22-bit
    tables (32 MiB of offsets), so 4 (16-bit, 1 MiB) are kept up to 4M entries, where they are nearly
    as fast."""
    return 4 if n < 1 << 22 else 3


def _expand_ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    counts = counts.astype(np.int64)
    total = int(counts.sum())
    run_starts = np.cumsum(counts) - counts
    return np.repeat(starts.astype(np.int64) - run_starts, counts) + np.arange(total)


class MultiIndexHash:
    """Key -> 64-bit hash with exact `query(value, threshold)`; see the module doc."""

    def __init__(self, chunks: int | None = None, *, tables: bool = True) -> None:
        """`tables=False` keeps a plain column that every query scans: half the memory, ~1 ms per query at
        1M entries, for hashes that are searched rarely."""
        if chunks is not None and not 3 <= chunks <= 16:
            raise ValueError("chunks must be between 3 (22-bit tables) and 16")
        self._fixed_chunks = chunks
        self._tables = tables
        self._col = KeyColumn((), np.uint64, min_capacity=1024, dead_allowance=4096)  # keys and their hashes
        self._indexed = 0  # slots [0, _indexed) are in the substring tables
        self._widths: list[int] = []
        self._starts = np.empty(0, np.uint32)  # every table's bucket offsets, concatenated
        self._slots = np.empty(0, np.uint32)  # every table's slots in bucket order, concatenated
        self._bases: list[int] = []  # where each table's offsets begin in _starts

    @classmethod
    def from_arrays(
        cls,
        keys: Sequence[int] | np.ndarray,
        values: Sequence[int] | np.ndarray,
        chunks: int | None = None,
        *,
        tables: bool = True,
    ) -> MultiIndexHash:
        index = cls(chunks, tables=tables)
        index.insert_many(keys, values)
        if tables and index._indexed < index._col.n:
            index._rebuild()
        return index

    def __len__(self) -> int:
        return self._col.live

    @property
    def nbytes(self) -> int:
        return self._col.nbytes + self._starts.nbytes + self._slots.nbytes

    # ------------------------------------------------------------------ updates
    def insert(self, key: int, value: int) -> None:
        """Add `key` (greater than every key inserted before) with hash `value`."""
        self.insert_many([key], [value])

    def insert_many(self, keys: Sequence[int] | np.ndarray, values: Sequence[int] | np.ndarray) -> None:
        """Add keys (increasing, above every existing key) with their hashes."""
        keys = np.asarray(keys, dtype=np.int64)
        values = np.asarray(values, dtype=np.uint64)
        if keys.shape != values.shape or keys.ndim != 1:
            raise ValueError("keys and values must be 1-D and of equal length")
        self._col.append(keys, values)
        if self._tables and self._col.n - self._indexed > max(4096, self._indexed // 16):
            self._rebuild()

    def delete(self, key: int) -> bool:
        """Remove `key`; False if it was not present."""
        if not self._col.delete(key):
            return False
        if self._col.needs_compaction():
            self._rebuild()
        return True

    def _rebuild(self) -> None:
        """Drop dead slots and index every slot in fresh substring tables."""
        self._col.compact()
        n = self._col.n
        if not self._tables or (n < _MIN_TABLES and self._fixed_chunks is None):
            self._widths, self._bases, self._indexed = [], [], 0
            self._starts, self._slots = np.empty(0, np.uint32), np.empty(0, np.uint32)
            return
        m = self._fixed_chunks or chunk_count(n)
        self._widths = [_BITS // m + (1 if i < _BITS % m else 0) for i in range(m)]
        starts: list[np.ndarray] = []
        slots: list[np.ndarray] = []
        bases: list[int] = []
        shift = 0
        for c, width in enumerate(self._widths):
            sub = ((self._col.data[:n] >> np.uint64(shift)) & np.uint64((1 << width) - 1)).astype(np.uint32)
            # order within a bucket does not matter: numpy's radix sort wins on 16-bit keys, its
            # SIMD quicksort on wider ones
            order = np.argsort(sub.astype(np.uint16) if width <= 16 else sub, kind="stable" if width <= 16 else None)
            order = order.astype(np.uint32)
            offsets = np.zeros((1 << width) + 1, np.uint32)
            np.cumsum(np.bincount(sub, minlength=1 << width), out=offsets[1:])
            bases.append(sum(len(s) for s in starts))
            starts.append(offsets + np.uint32(c * n))
            slots.append(order)
            shift += width
        self._starts = np.concatenate(starts)
        self._slots = np.concatenate(slots)
        self._bases = bases
        self._indexed = n

    # ------------------------------------------------------------------ queries
    def items(self) -> tuple[np.ndarray, np.ndarray]:
        """(keys, hashes) of every live entry, in key order."""
        live = self._col.alive[: self._col.n]
        return self._col.keys[: self._col.n][live], self._col.data[: self._col.n][live]

    def values_of(self, keys: Sequence[int] | np.ndarray) -> np.ndarray:
        """The hashes stored for live `keys` (KeyError naming one that is not live)."""
        keys = np.asarray(keys, dtype=np.int64)
        slots, found = self._col.lookup(keys)
        if not found.all():
            raise KeyError(int(keys[~found][0]))
        return self._col.data[slots]

    def query(self, value: int, threshold: int) -> tuple[np.ndarray, np.ndarray]:
        """(keys, distances) of every live entry within `threshold` bits (inclusive), in key order."""
        _, keys, dists = self.query_many([value], threshold)
        return keys, dists

    def query_many(
        self, values: Sequence[int] | np.ndarray, threshold: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(query positions, keys, distances) of every (query, live entry) pair within `threshold` bits,
        ordered by query then key. One numpy pass per block of queries: a file's 8 orientation variants,
        a batch, or a whole relink cost a few array operations instead of a Python call per hash."""
        values = np.asarray(values, dtype=np.uint64).ravel()
        radius = threshold // max(len(self._widths), 1)
        buckets = sum(len(_masks(w, radius)) if radius < w else 1 << w for w in self._widths)
        expected = buckets * self._indexed / (1 << min(self._widths, default=1))
        probe = bool(self._widths) and threshold < _BITS and expected <= _SCAN_SHARE * self._indexed
        per_query = expected + self._col.n - self._indexed if probe else self._col.n
        block = max(1, int(_BLOCK_CELLS // max(per_query, 1)))
        parts = []
        for first in range(0, len(values), block):
            q = values[first : first + block]
            if not probe:
                owners, slots, dists = self._scan(q, threshold, 0)
            else:
                owners, slots, dists = self._probe(q, threshold, radius)
                if self._col.n > self._indexed:  # the pending tail: scanned, then merged back into key order
                    tail = self._scan(q, threshold, self._indexed)
                    owners, slots, dists = (
                        np.concatenate(pair) for pair in zip((owners, slots, dists), tail, strict=True)
                    )
                    order = np.lexsort((slots, owners))
                    owners, slots, dists = owners[order], slots[order], dists[order]
            parts.append((owners + first, slots, dists))
        if not parts:
            return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int64)
        owners, slots, dists = (np.concatenate(column) for column in zip(*parts, strict=True))
        return owners, self._col.keys[slots], dists

    def _scan(self, q: np.ndarray, threshold: int, first: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every (query, slot >= first) pair within `threshold`, by brute force."""
        width = max(self._col.n - first, 1)
        dists = np.bitwise_count(self._col.data[first : self._col.n][None, :] ^ q[:, None]).ravel()
        hits = np.flatnonzero(dists <= threshold)
        hits = hits[self._col.alive[first + hits % width]]  # dead slots are few: check only the hits
        return hits // width, hits % width + first, dists[hits].astype(np.int64)

    def _probe(self, q: np.ndarray, threshold: int, radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Candidates from the buckets within `radius` of each query substring, verified exactly."""
        buckets, shift = [], 0
        for width, base in zip(self._widths, self._bases, strict=True):
            sub = ((q >> np.uint64(shift)) & np.uint64((1 << width) - 1)).astype(np.uint32)
            buckets.append((_masks(width, radius)[None, :] ^ sub[:, None]).astype(np.int64) + base)
            shift += width
        at = np.concatenate(buckets, axis=1)  # (queries, buckets per query)
        begin = self._starts[at.ravel()]
        counts = self._starts[at.ravel() + 1] - begin
        candidates = self._slots[_expand_ranges(begin, counts)].astype(np.int64)
        owners = np.repeat(np.repeat(np.arange(len(q)), at.shape[1]), counts)
        dists = np.bitwise_count(self._col.data[candidates] ^ q[owners])
        near = (dists <= threshold) & self._col.alive[candidates]
        unique, first = np.unique(owners[near] * max(self._col.n, 1) + candidates[near], return_index=True)
        return unique // max(self._col.n, 1), unique % max(self._col.n, 1), dists[near][first].astype(np.int64)
