"""find_duplicates / find_duplicates_to_remove over any hash encodings, with imagededup's semantics.

Owns threshold validation, the three `search_method` behaviours (result order and score types,
imagededup-spec.md §8-§9), self-exclusion, sorting, and the removal choice (§10). Pure: a mapping
of names to hex strings in, dicts/lists out. Memory stays O(N): one query row at a time.
"""

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from dedupd.search.bktree import BKTree

type DuplicateList = list[Any]


def validate_distance_threshold(threshold: object) -> None:
    """imagededup's check: an int (bool included, numpy ints excluded) from 0 to 64."""
    if not isinstance(threshold, int):
        raise TypeError("Threshold must be an int between 0 and 64")
    if threshold < 0 or threshold > 64:
        raise ValueError("Threshold must be an int between 0 and 64")


def _hashes_as_uint64(hex_hashes: Iterable[str]) -> np.ndarray:
    """Hex strings -> uint64 array; wider than 64 bits raises OverflowError like the Cython search."""
    return np.array([int(h, 16) for h in hex_hashes], dtype=np.uint64)


def _brute_force_rows(
    names: Sequence[str], hashes: Sequence[str], threshold: int, numpy_scores: bool
) -> dict[str, list[tuple[str, Any]]]:
    """Every query against every item in map order; `numpy_scores` mimics the pure-Python method."""
    values = _hashes_as_uint64(hashes)
    results: dict[str, list[tuple[str, Any]]] = {}
    for row, query in enumerate(values):
        distances = np.bitwise_count(values ^ query)
        hits = np.flatnonzero(distances <= threshold).tolist()
        results[names[row]] = [
            (names[col], np.int64(distances[col]) if numpy_scores else int(distances[col]))
            for col in hits
            if names[col] != names[row]
        ]
    return results


def _bktree_rows(names: Sequence[str], hashes: Sequence[str], threshold: int) -> dict[str, list[tuple[str, Any]]]:
    """imagededup's BK-tree search: same hits as brute force, in the tree's depth-first order."""
    if not names:
        raise IndexError("list index out of range")
    values = _hashes_as_uint64(hashes)
    tree = BKTree.from_items(np.arange(len(values)), values)
    return {
        names[row]: [(names[key], int(dist)) for key, dist in tree.query(int(value), threshold) if key != row]
        for row, value in enumerate(values)
    }


def find_hash_duplicates(
    encoding_map: Mapping[str, str],
    threshold: int,
    scores: bool = False,
    search_method: str = "brute_force_cython",
) -> dict[str, DuplicateList]:
    """Duplicates of every key within `threshold` bits, imagededup's output shape and order."""
    names = list(encoding_map)
    hashes = [encoding_map[name] for name in names]
    if search_method == "bktree":
        rows = _bktree_rows(names, hashes, threshold)
    else:
        rows = _brute_force_rows(names, hashes, threshold, numpy_scores=search_method == "brute_force")
    results: dict[str, DuplicateList] = {}
    for name in names:
        found = sorted(rows[name], key=lambda item: item[1])
        results[name] = found if scores else [candidate for candidate, _ in found]
    return results


def files_to_remove(duplicates: Mapping[Any, Sequence[Any]]) -> list[Any]:
    """imagededup's removal rule: walk keys in order; a key not yet marked marks all its duplicates."""
    marked: set[Any] = set()
    for key, found in duplicates.items():
        if key in marked:
            continue
        marked.update(item[0] if isinstance(item, tuple) else item for item in found)
    return list(marked)
