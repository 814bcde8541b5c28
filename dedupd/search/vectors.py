"""Embedding matrix: exact cosine search over L2-normalised CNN vectors kept as float16.

Why float16 + numkong: a 512-d float32 copy of 1M embeddings is 2 GiB and numpy has no fast float16
kernel; numkong's SIMD dot products read the float16 rows directly (f32 accumulation), about 2.5x faster
than numpy's float32 BLAS on the same rows here and at half the memory. Every query is one pass over the
matrix (a matrix-vector product, no N x N anything). Rows append in increasing key order; deletes clear
an alive flag and the matrix is compacted when a quarter of it is dead (`keycolumn.KeyColumn`, shared with mih).
"""

from __future__ import annotations

import numkong
import numpy as np

from dedupd.search.keycolumn import KeyColumn

_QUERY_BLOCK_BYTES = 64 << 20  # bound on the similarity block of a many-query search


class EmbeddingIndex:
    """Key -> unit vector (float16), with threshold and top-k cosine search."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._col = KeyColumn((dim,), np.float16, min_capacity=256, dead_allowance=1024)  # keys and their rows

    @classmethod
    def from_arrays(cls, keys: np.ndarray, rows: np.ndarray) -> EmbeddingIndex:
        rows = np.asarray(rows)
        index = cls(rows.shape[1])
        index.insert_many(keys, rows)
        return index

    def __len__(self) -> int:
        return self._col.live

    @property
    def nbytes(self) -> int:
        return self._col.nbytes

    # ------------------------------------------------------------------ updates
    def insert_many(self, keys: np.ndarray, rows: np.ndarray) -> None:
        """Append rows for keys that are increasing and above every key already present."""
        keys = np.asarray(keys, dtype=np.int64)
        rows = np.asarray(rows, dtype=np.float16).reshape(len(keys), self.dim)
        self._col.append(keys, rows)

    def delete(self, key: int) -> bool:
        """Remove `key`; False if it was not present."""
        if not self._col.delete(key):
            return False
        if self._col.needs_compaction():
            self._col.compact()
        return True

    def live_view(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(keys, rows, alive copy) of every slot now: views that later appends, deletes and compactions
        leave as they are (they write past these slots, into new arrays, or into the alive flags)."""
        return self._col.keys[: self._col.n], self._col.data[: self._col.n], self._col.alive[: self._col.n].copy()

    # ------------------------------------------------------------------ queries
    def rows_of(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(float16 rows, found): the rows of the live `keys`, zeros where a key has none."""
        keys = np.asarray(keys, dtype=np.int64)
        if not self._col.n:
            return np.zeros((len(keys), self.dim), np.float16), np.zeros(len(keys), bool)
        slots, found = self._col.lookup(keys)
        return np.where(found[:, None], self._col.data[slots], np.float16(0)), found

    def similarities(self, queries: np.ndarray) -> np.ndarray:
        """Cosine similarity of each (normalised) query row to every slot: shape (len(queries), slots), float64."""
        queries = np.asarray(queries, dtype=np.float32).reshape(-1, self.dim)
        queries = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
        if not self._col.n:
            return np.empty((len(queries), 0), np.float32)
        # numkong's default float64 output; asking it for float32 output takes a much slower path
        sims = numkong.cdist(queries.astype(np.float16), self._col.data[: self._col.n], metric="dot")
        return np.asarray(sims).reshape(len(queries), self._col.n)

    def search(self, query: np.ndarray, min_similarity: float) -> tuple[np.ndarray, np.ndarray]:
        """(keys, similarities) with similarity >= min_similarity, most similar first."""
        return self.search_many(np.asarray(query).reshape(1, self.dim), min_similarity)[0]

    def search_many(self, queries: np.ndarray, min_similarity: float) -> list[tuple[np.ndarray, np.ndarray]]:
        """`search` for each query row, computed in blocks so memory stays bounded."""
        queries = np.asarray(queries).reshape(-1, self.dim)
        block = max(1, _QUERY_BLOCK_BYTES // max(8 * self._col.n, 1))
        out = []
        for first in range(0, len(queries), block):
            sims = self.similarities(queries[first : first + block])
            for row in sims:
                slots = np.flatnonzero((row >= min_similarity) & self._col.alive[: self._col.n])
                order = np.argsort(-row[slots], kind="stable")
                out.append((self._col.keys[slots[order]], row[slots[order]]))
        return out

    def top_k(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(keys, similarities) of the k most similar live rows, most similar first."""
        row = self.similarities(query)[0]
        row = np.where(self._col.alive[: self._col.n], row, -np.inf)
        k = min(k, self._col.live)
        best = np.argpartition(-row, k - 1)[:k] if k else np.empty(0, np.int64)
        best = best[np.argsort(-row[best], kind="stable")]
        return self._col.keys[best], row[best]
