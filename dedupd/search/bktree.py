"""BK-tree over 64-bit hashes, laid out in flat numpy arrays (one row per node, no Python node objects).

Semantics follow imagededup's BKTree (imagededup-spec.md section 9) so `find_duplicates(search_method=
"bktree")` can reuse it: the root is the first key inserted; every later key descends by its Hamming
distance to each node and becomes the child at the first distance with no child yet; children keep
insertion order. `query` returns exactly the (key, distance) order of imagededup's stack search (pop the
last, push qualifying children in insertion order), i.e. pre-order with children visited last-inserted
first, restricted to the visited nodes; that holds until a key is deleted (deleted keys stay as routing
tombstones until more than half the tree is dead, then the tree is rebuilt from the live keys in their
insertion order, which is again the tree imagededup would build from them).

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
    """A BK-tree of (key_id, 64-bit value) with insert, delete and inclusive-threshold range query.

    Build many at once with `BKTree.from_items(keys, values)` (vectorised, same tree as inserting them
    one by one); `insert(key, value)`, `delete(key)`; `query(value, threshold)` -> [(key, distance)].
    """

    def __init__(self) -> None:
        self._n = 0
        self._live = 0
        self._values = np.empty(0, np.uint64)
        self._keys = np.empty(0, np.int64)
        self._parent = np.empty(0, np.int32)
        self._edge = np.empty(0, np.uint8)
        self._alive = np.empty(0, bool)
        self._first_child = np.empty(0, np.int32)
        self._next_sibling = np.empty(0, np.int32)
        self._node_of_key = np.empty(0, np.int32)
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
        tree._reserve(n)
        tree._values[:n] = values
        tree._keys[:n] = keys
        tree._alive[:n] = True
        parent = tree._parent
        parent[:n] = _NONE
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
        tree._n = tree._live = n
        tree._link_siblings()
        tree._index_keys(keys, np.arange(n, dtype=np.int32))
        return tree

    def _reserve(self, size: int) -> None:
        """Grow every per-node array to hold at least `size` nodes."""
        if size <= len(self._values):
            return
        cap = max(size, 2 * len(self._values), 16)
        for name, fill in (
            ("_values", 0), ("_keys", 0), ("_parent", _NONE), ("_edge", 0), ("_alive", False),
            ("_first_child", _NONE), ("_next_sibling", _NONE),
        ):  # fmt: skip
            old = getattr(self, name)
            new = np.full(cap, fill, dtype=old.dtype)
            new[: self._n] = old[: self._n]
            setattr(self, name, new)

    def _index_keys(self, keys: np.ndarray, nodes: np.ndarray) -> None:
        top = int(keys.max()) + 1
        if top > len(self._node_of_key):
            grown = np.full(max(top, 2 * len(self._node_of_key)), _NONE, np.int32)
            grown[: len(self._node_of_key)] = self._node_of_key
            self._node_of_key = grown
        self._node_of_key[keys] = nodes

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

    def _link_siblings(self) -> None:
        """Set first-child / next-sibling links (used by single inserts) from the parent array."""
        start, nodes = self._csr()
        counts = np.diff(start)
        has = np.flatnonzero(counts)
        self._first_child[has] = nodes[start[has]]
        same_parent = self._parent[nodes[:-1]] == self._parent[nodes[1:]]
        self._next_sibling[nodes[:-1][same_parent]] = nodes[1:][same_parent]

    # ------------------------------------------------------------------ updates
    def __len__(self) -> int:
        return self._live

    def __contains__(self, key: int) -> bool:
        return 0 <= key < len(self._node_of_key) and self._node_of_key[key] != _NONE

    def insert(self, key: int, value: int) -> None:
        """Add `key` with hash `value` (0 <= value < 2**64); `key` must not be in the tree."""
        if key < 0 or key in self:
            raise ValueError(f"key {key} is negative or already in the tree")
        node = self._n
        self._reserve(node + 1)
        self._values[node] = value
        self._keys[node] = key
        self._alive[node] = True
        if node:
            self._attach(node, value)
        self._n += 1
        self._live += 1
        self._index_keys(np.array([key]), np.array([node], np.int32))
        self._children = self._rank = None

    def _attach(self, node: int, value: int) -> None:
        values, edge, first, nxt = self._values, self._edge, self._first_child, self._next_sibling
        at = 0
        while True:
            dist = (int(values[at]) ^ value).bit_count()
            child, last = int(first[at]), _NONE
            while child != _NONE and edge[child] != dist:
                last, child = child, int(nxt[child])
            if child == _NONE:
                if last == _NONE:
                    first[at] = node
                else:
                    nxt[last] = node
                self._parent[node] = at
                edge[node] = dist
                return
            at = child

    def delete(self, key: int) -> None:
        """Remove `key` (KeyError if absent). Its node stays as a tombstone until a compaction."""
        if key not in self:
            raise KeyError(key)
        node = self._node_of_key[key]
        self._alive[node] = False
        self._node_of_key[key] = _NONE
        self._live -= 1
        if self._n - self._live > self._live:
            self._compact()

    def _compact(self) -> None:
        live = np.flatnonzero(self._alive[: self._n])
        self.__dict__.update(BKTree.from_items(self._keys[live], self._values[live]).__dict__)

    # ------------------------------------------------------------------ queries
    def query(self, value: int, threshold: int, *, ordered: bool = True) -> list[tuple[int, int]]:
        """(key, distance) of every live key within `threshold` (inclusive) of `value`.

        `ordered=True` gives imagededup's stack order (see module doc); `ordered=False` skips the
        rank sort (and its O(n) rebuild after inserts) when order does not matter.
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
            hit = (dist <= threshold) & self._alive[frontier]
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
