"""Duplicate groups: the connected components of the match graph, kept up to date as files come and go.

Groups are unions (A~B and B~C put A, B, C in one group even if A and C do not match). Adding a link
merges two groups (the smaller is relabelled, so a node moves O(log n) times). Removing a node recomputes
only its own former group from the links that remain (the caller's `neighbours`), splitting it where
the node was the only bridge. A group always has at least two members; singletons are never stored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


class Groups:
    """Connected components of an undirected graph over int node ids, without singletons."""

    def __init__(self) -> None:
        self._group_of: dict[int, int] = {}
        self._members: dict[int, set[int]] = {}
        self._next_id = 0

    @classmethod
    def from_edges(cls, a: np.ndarray, b: np.ndarray) -> Groups:
        """Groups of the graph with edges a[i] - b[i], computed in one vectorised pass."""
        groups = cls()
        a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
        if not len(a):
            return groups
        nodes, inverse = np.unique(np.concatenate([a, b]), return_inverse=True)
        n = len(nodes)
        graph = coo_matrix((np.ones(len(a), np.int8), (inverse[: len(a)], inverse[len(a) :])), shape=(n, n))
        count, labels = connected_components(graph, directed=False)
        order = np.argsort(labels, kind="stable")
        bounds = np.flatnonzero(np.diff(labels[order])) + 1
        for members in np.split(nodes[order], bounds):
            groups._add(set(members.tolist()))
        return groups

    def _add(self, members: set[int]) -> None:
        gid = self._next_id
        self._next_id += 1
        self._members[gid] = members
        for node in members:
            self._group_of[node] = gid

    # ------------------------------------------------------------------ updates
    def link(self, a: int, b: int) -> None:
        """Record that a and b match: their groups (or the two singletons) become one."""
        if a == b:
            return
        ga, gb = self._group_of.get(a), self._group_of.get(b)
        if ga is None and gb is None:
            self._add({a, b})
        elif ga is None or gb is None:
            gid, node = (ga, b) if gb is None else (gb, a)
            assert gid is not None  # one of the two is grouped
            self._members[gid].add(node)
            self._group_of[node] = gid
        elif ga != gb:
            big, small = (ga, gb) if len(self._members[ga]) >= len(self._members[gb]) else (gb, ga)
            moving = self._members.pop(small)
            self._members[big] |= moving
            for node in moving:
                self._group_of[node] = big

    def remove(self, node: int, neighbours: Callable[[int], Iterable[int]]) -> None:
        """Drop `node` and re-split what is left of its group.

        `neighbours(x)` must give x's current links, i.e. without `node` any more.
        """
        gid = self._group_of.pop(node, None)
        if gid is None:
            return
        left = self._members.pop(gid)
        left.discard(node)
        for x in left:
            del self._group_of[x]
        while left:
            start = left.pop()
            component, frontier = {start}, [start]
            while frontier:
                for y in neighbours(frontier.pop()):
                    if y in left:
                        left.discard(y)
                        component.add(y)
                        frontier.append(y)
            if len(component) > 1:
                self._add(component)

    # ------------------------------------------------------------------ reads
    def group_of(self, node: int) -> frozenset[int] | None:
        """The group holding `node`, or None when it matches nothing."""
        gid = self._group_of.get(node)
        return None if gid is None else frozenset(self._members[gid])

    def __iter__(self) -> Iterator[frozenset[int]]:
        return (frozenset(m) for m in self._members.values())

    def __len__(self) -> int:
        return len(self._members)

    def grouped(self) -> int:
        """How many nodes are in some group."""
        return len(self._group_of)
