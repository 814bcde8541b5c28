"""Embedding matrix: exact cosine search over L2-normalised CNN vectors kept as float16.

Why float16 + numkong: a 512-d float32 copy of 1M embeddings is 2 GiB and numpy has no fast float16
kernel; numkong's SIMD dot products read the float16 rows directly (f32 accumulation), about 2.5x faster
than numpy's float32 BLAS on the same rows here and at half the memory. Every query is one pass over the
matrix (a matrix-vector product, no N x N anything). Rows append in increasing key order; deletes clear
an alive flag and the matrix is compacted when a quarter of it is dead.
"""

from __future__ import annotations

import numkong
import numpy as np

_QUERY_BLOCK_BYTES = 64 << 20  # bound on the similarity block of a many-query search


class EmbeddingIndex:
    """Key -> unit vector (float16), with threshold and top-k cosine search."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._n = 0
        self._live = 0
        self._keys = np.empty(0, np.int64)
        self._rows = np.empty((0, dim), np.float16)
        self._alive = np.empty(0, bool)

    @classmethod
    def from_arrays(cls, keys: np.ndarray, rows: np.ndarray) -> EmbeddingIndex:
        rows = np.asarray(rows)
        index = cls(rows.shape[1])
        index.insert_many(keys, rows)
        return index

    def __len__(self) -> int:
        return self._live

    @property
    def nbytes(self) -> int:
        return self._keys.nbytes + self._rows.nbytes + self._alive.nbytes

    # ------------------------------------------------------------------ updates
    def insert_many(self, keys: np.ndarray, rows: np.ndarray) -> None:
        """Append rows for keys that are increasing and above every key already present."""
        keys = np.asarray(keys, dtype=np.int64)
        rows = np.asarray(rows, dtype=np.float16).reshape(len(keys), self.dim)
        if not len(keys):
            return
        if (self._n and keys[0] <= self._keys[self._n - 1]) or np.any(np.diff(keys) <= 0):
            raise ValueError("keys must be inserted in increasing order")
        end = self._n + len(keys)
        if end > len(self._keys):
            cap = max(end, 2 * len(self._keys), 256)
            grown = np.empty((cap, self.dim), np.float16)
            grown[: self._n] = self._rows[: self._n]
            self._rows = grown
            self._keys = np.concatenate([self._keys[: self._n], np.zeros(cap - self._n, np.int64)])
            self._alive = np.concatenate([self._alive[: self._n], np.zeros(cap - self._n, bool)])
        self._keys[self._n : end] = keys
        self._rows[self._n : end] = rows
        self._alive[self._n : end] = True
        self._n = end
        self._live += len(keys)

    def delete(self, key: int) -> bool:
        """Remove `key`; False if it was not present."""
        slot = int(np.searchsorted(self._keys[: self._n], key))
        if slot == self._n or self._keys[slot] != key or not self._alive[slot]:
            return False
        self._alive[slot] = False
        self._live -= 1
        if self._n - self._live > max(1024, self._n // 4):
            self._compact()
        return True

    def _compact(self) -> None:
        live = np.flatnonzero(self._alive[: self._n])
        self._keys, self._rows = self._keys[live], self._rows[live]
        self._alive = np.ones(len(live), bool)
        self._n = self._live = len(live)

    def live_view(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(keys, rows, alive copy) of every slot now: views that later appends, deletes and compactions
        leave as they are (they write past these slots, into new arrays, or into the alive flags)."""
        return self._keys[: self._n], self._rows[: self._n], self._alive[: self._n].copy()

    # ------------------------------------------------------------------ queries
    def rows_of(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(float16 rows, found): the rows of the live `keys`, zeros where a key has none."""
        keys = np.asarray(keys, dtype=np.int64)
        if not self._n:
            return np.zeros((len(keys), self.dim), np.float16), np.zeros(len(keys), bool)
        slots = np.minimum(np.searchsorted(self._keys[: self._n], keys), self._n - 1)
        found = (self._keys[slots] == keys) & self._alive[slots]
        return np.where(found[:, None], self._rows[slots], np.float16(0)), found

    def similarities(self, queries: np.ndarray) -> np.ndarray:
        """Cosine similarity of each (normalised) query row to every slot: shape (len(queries), slots), float64."""
        queries = np.asarray(queries, dtype=np.float32).reshape(-1, self.dim)
        queries = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
        if not self._n:
            return np.empty((len(queries), 0), np.float32)
        # numkong's default float64 output; asking it for float32 output takes a much slower path
        sims = numkong.cdist(queries.astype(np.float16), self._rows[: self._n], metric="dot")
        return np.asarray(sims).reshape(len(queries), self._n)

    def search(self, query: np.ndarray, min_similarity: float) -> tuple[np.ndarray, np.ndarray]:
        """(keys, similarities) with similarity >= min_similarity, most similar first."""
        return self.search_many(np.asarray(query).reshape(1, self.dim), min_similarity)[0]

    def search_many(self, queries: np.ndarray, min_similarity: float) -> list[tuple[np.ndarray, np.ndarray]]:
        """`search` for each query row, computed in blocks so memory stays bounded."""
        queries = np.asarray(queries).reshape(-1, self.dim)
        block = max(1, _QUERY_BLOCK_BYTES // max(8 * self._n, 1))
        out = []
        for first in range(0, len(queries), block):
            sims = self.similarities(queries[first : first + block])
            for row in sims:
                slots = np.flatnonzero((row >= min_similarity) & self._alive[: self._n])
                order = np.argsort(-row[slots], kind="stable")
                out.append((self._keys[slots[order]], row[slots[order]]))
        return out

    def top_k(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(keys, similarities) of the k most similar live rows, most similar first."""
        row = self.similarities(query)[0]
        row = np.where(self._alive[: self._n], row, -np.inf)
        k = min(k, self._live)
        best = np.argpartition(-row, k - 1)[:k] if k else np.empty(0, np.int64)
        best = best[np.argsort(-row[best], kind="stable")]
        return self._keys[best], row[best]
