"""dedupd's own duplicate rule: exact digest, orientation-aware pHash confirmed by the CNN, CNN alone.

Owns the fusion of the three kinds of evidence into one decision per pair and the default
thresholds, chosen on the bench corpora (BENCHMARKS.md, "Matcher"): with the default CNN
(sscd-distilled) a pair is a duplicate when

* the files are byte-identical (`exact`), or
* their orientation-aware pHash distance is <= `hash_threshold` bits AND the CNN agrees at
  >= `hash_confirm_similarity` (`phash`; the CNN confirmation is what rejects the black-corner
  look-alikes that 25-degree rotations of different photos produce), or
* the CNN similarity alone is >= `cnn_min_similarity` (`cnn`: crops, rotations, re-edits).

Without the CNN only `exact` and a strict `hash_only_threshold` remain. The daemon and
`dedupd scan` both decide through `decide`, so the same files give the same groups. Pure:
arrays in, pairs out.
"""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np

#: How many (row, column) cells one chunk of the all-pairs scan may hold: bounds memory at ~64 MiB.
PAIR_CHUNK_CELLS = 1 << 22


@dataclass(frozen=True, slots=True)
class MatcherSettings:
    """Thresholds of the fusion rule (module docstring). Defaults are the measured ones."""

    hash_threshold: int = 10
    hash_confirm_similarity: float = 0.5
    cnn_min_similarity: float = 0.62
    hash_only_threshold: int = 2
    cnn_enabled: bool = True

    @classmethod
    def defaults(cls) -> "MatcherSettings":
        return cls()

    def with_threshold(self, bits: int) -> "MatcherSettings":
        """Override the hash threshold that applies in this mode (confirmed or hash-only)."""
        return replace(self, hash_threshold=bits) if self.cnn_enabled else replace(self, hash_only_threshold=bits)

    def with_min_similarity(self, similarity: float) -> "MatcherSettings":
        return replace(self, cnn_min_similarity=similarity)

    def without_cnn(self) -> "MatcherSettings":
        return replace(self, cnn_enabled=False)


@dataclass(frozen=True, slots=True)
class PairMatch:
    """Two files (by index) judged duplicates, how, and the score of the deciding evidence."""

    first: int
    second: int
    method: str
    score: int | float


def oriented_distances(variants: np.ndarray, hashes: np.ndarray) -> np.ndarray:
    """(rows, N) distances: for each query row, min over its 8 orientation variants vs every hash.

    Sign-hash variants are exact bit operations, so this equals the smallest distance over every
    rotation and mirror of either file: symmetric, whichever file is the query.
    """
    distances = np.bitwise_count(variants[:, 0, None] ^ hashes[None, :])
    for k in range(1, variants.shape[1]):
        np.minimum(distances, np.bitwise_count(variants[:, k, None] ^ hashes[None, :]), out=distances)
    return distances


def decide(
    exact: np.ndarray, distances: np.ndarray, similarities: np.ndarray | None, settings: MatcherSettings
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vectorised fusion over a block of pairs: (is_exact, is_phash, is_cnn), mutually exclusive."""
    if similarities is None or not settings.cnn_enabled:
        by_hash = ~exact & (distances <= settings.hash_only_threshold)
        return exact, by_hash, np.zeros_like(exact)
    by_hash = ~exact & (distances <= settings.hash_threshold) & (similarities >= settings.hash_confirm_similarity)
    by_cnn = ~exact & ~by_hash & (similarities >= settings.cnn_min_similarity)
    return exact, by_hash, by_cnn


def all_pairs(
    digest_ids: np.ndarray,
    variants: np.ndarray,
    embeddings: np.ndarray | None,
    settings: MatcherSettings,
) -> Iterator[PairMatch]:
    """Every duplicate pair (i < j) among N encodings, in row-chunks so memory stays O(N).

    `digest_ids` (N,) equal for byte-identical files; `variants` (N, 8) uint64 sign-hash variants
    (column 0 = the file as stored after EXIF orientation); `embeddings` (N, D) L2-normalised or None.
    """
    count = len(digest_ids)
    hashes = variants[:, 0]
    rows_per_chunk = max(1, PAIR_CHUNK_CELLS // max(count, 1))
    for start in range(0, count, rows_per_chunk):
        stop = min(count, start + rows_per_chunk)
        exact = digest_ids[start:stop, None] == digest_ids[None, :]
        distances = oriented_distances(variants[start:stop], hashes)
        similarities = embeddings[start:stop] @ embeddings.T if embeddings is not None else None
        upper = np.arange(count)[None, :] > np.arange(start, stop)[:, None]
        is_exact, is_phash, is_cnn = decide(exact, distances, similarities, settings)
        for method, mask in (("exact", is_exact), ("phash", is_phash), ("cnn", is_cnn)):
            for row, col in zip(*np.nonzero(mask & upper), strict=True):
                if method == "cnn":
                    score: int | float = round(float(similarities[row, col]), 4)  # type: ignore[index]
                else:
                    score = int(distances[row, col])
                yield PairMatch(start + int(row), int(col), method, score)


_METHOD_STRENGTH = {"exact": 0, "phash": 1, "cnn": 2}


def evidence_rank(method: str, score: float) -> tuple[int, float]:
    """Sort key of a match, strongest first: exact, then smaller distance, then higher similarity."""
    return (_METHOD_STRENGTH.get(method, len(_METHOD_STRENGTH)), -score if method == "cnn" else score)


def stronger(a: PairMatch, b: PairMatch) -> bool:
    """Is `a` stronger evidence than `b`."""
    return evidence_rank(a.method, a.score) < evidence_rank(b.method, b.score)


def connected_groups(count: int, pairs: Sequence[PairMatch]) -> list[list[int]]:
    """Transitive groups (union of pairs), singletons left out, each sorted, ordered by first member."""
    parent = list(range(count))

    def root(node: int) -> int:
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for pair in pairs:
        parent[root(pair.first)] = root(pair.second)
    members: dict[int, list[int]] = {}
    for node in range(count):
        members.setdefault(root(node), []).append(node)
    return sorted((group for group in members.values() if len(group) > 1), key=lambda group: group[0])
