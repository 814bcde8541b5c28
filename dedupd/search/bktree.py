"""BK-tree over 64-bit hashes, laid out in flat numpy arrays (one row per node, no Python node objects).

Semantics follow imagededup's BKTree (imagededup-spec.md section 9) so `find_duplicates(search_method=
"bktree")` can reuse it: the root is the first key inserted; every later key descends by its Hamming
distance to each node and becomes the child at the first distance with no child yet; children keep
insertion order. `query` returns exactly the (key, distance) order of imagededup's stack search (pop the
last, push qualifying children in insertion order), i.e. pre-order with children visited last-inserted
first, restricted to the visited nodes. The tree is built once from all its items (`from_items`): imagededup's
`find_duplicates` never inserts into or deletes from a built tree, and nothing else in dedupd uses one.

The search itself is breadth-first and vectorised (one numpy step per tree level), then sorted by each
node's pre-order rank. Keys are small non-negative ints (an index into the caller's table).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_NONE = -1
_MAX_DISTANCE = 64


def _expand_ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenation of arange(s, s + c) for every (s, c), vectorised."""
    total = int(counts.sum())
    if total == 0:
        return np.empty(0, np.int64)
    run_starts = np.cumsum(counts) - counts
    return np.repeat(starts.astype(np.int64) - run_starts, counts) + np.arange(total)


class BKTree:
    """A BK-tree of (key_id, 64-bit value) with an inclusive-threshold range query.

    Built with `BKTree.from_items(keys, values)` (vectorised, the tree inserting them one by one in order
    would build); `query(value, threshold)` -> [(key, distance)].
    """

    def __init__(self) -> None:
        self._n = 0
        self._values = np.empty(0, np.uint64)
        self._keys = np.empty(0, np.int64)
        self._parent = np.empty(0, np.int32)
        self._edge = np.empty(0, np.uint8)
        self._children: tuple[np.ndarray, np.ndarray] | None = None  # CSR, built lazily for queries
        self._rank: np.ndarray | None = None  # pre-order rank, built lazily for ordered queries

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_items(cls, keys: Sequence[int] | np.ndarray, values: Sequence[int] | np.ndarray) -> BKTree:
        """The tree that inserting `keys[i], values[i]` in order would build, built level by level.

        At each level every pending item is at some node; among the items at node X with distance d,
        the earliest becomes X's child at edge d and the others descend into it - exactly what
        sequential insertion does.
        """
        keys = np.asarray(keys, dtype=np.int64)
        values = np.asarray(values, dtype=np.uint64)
        if keys.shape != values.shape or keys.ndim != 1:
            raise ValueError("keys and values must be 1-D and of equal length")
        tree = cls()
        n = len(keys)
        if n == 0:
            return tree
        if keys.min() < 0 or len(np.unique(keys)) != n:
            raise ValueError("keys must be distinct non-negative ints")
        tree._values = values.copy()
        tree._keys = keys.copy()
        tree._edge = np.zeros(n, np.uint8)
        parent = tree._parent = np.full(n, _NONE, np.int32)
        pending = np.arange(1, n, dtype=np.int64)
        at = np.zeros(n - 1, dtype=np.int64)
        while pending.size:
            dist = np.bitwise_count(values[pending] ^ values[at]).astype(np.int64)
            _, first, inverse = np.unique(at * (_MAX_DISTANCE + 1) + dist, return_index=True, return_inverse=True)
            new_nodes = pending[first]
            parent[new_nodes] = at[first]
            tree._edge[new_nodes] = dist[first]
            descending = np.ones(pending.size, bool)
            descending[first] = False
            at = new_nodes[inverse[descending]]
            pending = pending[descending]
        tree._n = n
        return tree

    def _csr(self) -> tuple[np.ndarray, np.ndarray]:
        """(start, child nodes): children of node i are nodes[start[i]:start[i+1]], in insertion order."""
        if self._children is None:
            n = self._n
            parents = self._parent[1:n]
            nodes = (np.argsort(parents, kind="stable") + 1).astype(np.int32)
            start = np.zeros(n + 1, np.int64)
            np.cumsum(np.bincount(parents, minlength=n), out=start[1:])
            self._children = (start, nodes)
        return self._children

    def __len__(self) -> int:
        return self._n

    # ------------------------------------------------------------------ queries
    def query(self, value: int, threshold: int, *, ordered: bool = True) -> list[tuple[int, int]]:
        """(key, distance) of every key within `threshold` (inclusive) of `value`.

        `ordered=True` gives imagededup's stack order (see module doc); `ordered=False` skips the
        rank sort when order does not matter.
        """
        nodes, dists = self._search(np.uint64(value), threshold)
        if ordered and nodes.size > 1:
            order = np.argsort(self._ranks()[nodes], kind="stable")
            nodes, dists = nodes[order], dists[order]
        return list(zip(self._keys[nodes].tolist(), dists.tolist(), strict=True))

    def _search(self, value: np.uint64, threshold: int) -> tuple[np.ndarray, np.ndarray]:
        if self._n == 0:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        start, children = self._csr()
        frontier = np.zeros(1, np.int64)
        found_nodes, found_dists = [], []
        while frontier.size:
            dist = np.bitwise_count(self._values[frontier] ^ value).astype(np.int64)
            hit = dist <= threshold
            found_nodes.append(frontier[hit])
            found_dists.append(dist[hit])
            counts = start[frontier + 1] - start[frontier]
            kids = children[_expand_ranges(start[frontier], counts)]
            near = np.abs(self._edge[kids].astype(np.int64) - np.repeat(dist, counts)) <= threshold
            frontier = kids[near].astype(np.int64)
        return np.concatenate(found_nodes), np.concatenate(found_dists)

    def _ranks(self) -> np.ndarray:
        """Pre-order rank of every node with children taken last-inserted first (the stack order)."""
        if self._rank is None:
            n = self._n
            start, children = self._csr()
            levels = [np.zeros(1, np.int64)]
            while True:
                lvl = levels[-1]
                kids = children[_expand_ranges(start[lvl], start[lvl + 1] - start[lvl])]
                if not kids.size:
                    break
                levels.append(kids.astype(np.int64))
            size = np.ones(n, np.int64)
            for lvl in reversed(levels[1:]):
                size += np.bincount(self._parent[lvl], weights=size[lvl], minlength=n).astype(np.int64)
            # siblings inserted after a child are visited before it: their subtrees come first
            child_sizes = np.cumsum(size[children])
            seg_end = start[self._parent[children] + 1] - 1
            later_siblings = np.empty(n, np.int64)
            later_siblings[children] = child_sizes[seg_end] - child_sizes
            rank = np.zeros(n, np.int64)
            for lvl in levels[1:]:
                rank[lvl] = rank[self._parent[lvl]] + 1 + later_siblings[lvl]
            self._rank = rank
        return self._rank
