"""Increasing int64 keys with one payload row each, in growable numpy arrays; a delete leaves a tombstone (an
alive flag) until the owner compacts. The storage under both in-memory indexes (`mih.MultiIndexHash`: the
64-bit hashes, `vectors.EmbeddingIndex`: the float16 embedding rows), so both append, find and drop keys alike.

Growing and compacting allocate new arrays (never resize in place): views an owner handed out before stay valid.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


class KeyColumn:
    """Slots [0, n) hold keys in increasing order, their rows, and whether each is alive (`live` of them)."""

    def __init__(self, row_shape: tuple[int, ...], dtype: npt.DTypeLike, *, min_capacity: int, dead_allowance: int):
        """`min_capacity`: slots allocated at the first append; `dead_allowance`: tombstones tolerated before
        `needs_compaction` (beyond it, a quarter of the slots)."""
        self.n = 0
        self.live = 0
        self.keys = np.empty(0, np.int64)
        self.data: np.ndarray = np.empty((0, *row_shape), dtype)
        self.alive = np.empty(0, bool)
        self._min_capacity = min_capacity
        self._dead_allowance = dead_allowance

    @property
    def nbytes(self) -> int:
        return self.keys.nbytes + self.data.nbytes + self.alive.nbytes

    def append(self, keys: np.ndarray, rows: np.ndarray) -> None:
        """Add `keys` (int64, increasing, above every key present) with their `rows`."""
        if not len(keys):
            return
        if (self.n and keys[0] <= self.keys[self.n - 1]) or np.any(np.diff(keys) <= 0):
            raise ValueError("keys must be inserted in increasing order")
        end = self.n + len(keys)
        if end > len(self.keys):
            cap = max(end, 2 * len(self.keys), self._min_capacity)
            grown = np.zeros((cap, *self.data.shape[1:]), self.data.dtype)
            grown[: self.n] = self.data[: self.n]
            self.data = grown
            self.keys = np.concatenate([self.keys[: self.n], np.zeros(cap - self.n, np.int64)])
            self.alive = np.concatenate([self.alive[: self.n], np.zeros(cap - self.n, bool)])
        self.keys[self.n : end] = keys
        self.data[self.n : end] = rows
        self.alive[self.n : end] = True
        self.n = end
        self.live += len(keys)

    def delete(self, key: int) -> bool:
        """Tombstone `key`; False if it was not present."""
        slot = int(np.searchsorted(self.keys[: self.n], key))
        if slot == self.n or self.keys[slot] != key or not self.alive[slot]:
            return False
        self.alive[slot] = False
        self.live -= 1
        return True

    def needs_compaction(self) -> bool:
        return self.n - self.live > max(self._dead_allowance, self.n // 4)

    def compact(self) -> None:
        """Drop the tombstones (slots renumbered, keys still increasing)."""
        live = self.alive[: self.n]
        if live.all():
            return
        self.keys, self.data = self.keys[: self.n][live], self.data[: self.n][live]
        self.alive = np.ones(len(self.keys), bool)
        self.n = self.live = len(self.keys)

    def lookup(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(slots, found) of `keys`: found is False for a key not alive here (its slot is then meaningless)."""
        if not self.n:
            return np.zeros(len(keys), np.int64), np.zeros(len(keys), bool)
        slots = np.minimum(np.searchsorted(self.keys[: self.n], keys), self.n - 1)
        return slots, (self.keys[slots] == keys) & self.alive[slots]
