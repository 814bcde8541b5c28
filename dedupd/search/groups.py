"""Duplicate groups that do not chain: the one grouping of the scan and the daemon.

A group is built from the duplicate links, strongest first (the caller orders them: exact, then
smaller distance, then higher similarity, ties by path), joining two groups only when no pair
across them is a *cannot-link*: two files the evidence says are different captures (the matcher's
similar-tier pairs). So an EXIF-stripped copy of one burst frame, a duplicate of that frame and
pixel-alike to the next, joins the first frame's group and never pulls the burst together. Without
cannot-links this is plain connected components (transitive: A~B and B~C put A, B, C together).
Metadata is evidence about any two files, matched or not: with `identity` (a hashable capture
identity per node, e.g. its EXIF time and unique id) and `apart` (do two identities name different
captures), a join is also refused when any identity of one group is `apart` from one of the other,
so two burst frames never meet through look-alike files without metadata between them.
With `units` (node -> its capture set's representative, `search.sets`), the files of one exposure are one
node: joined before any link, never kept apart by a cannot-link or identity between them, and a group that
is one set alone (a RAW and its JPEG matching each other) is no group.
Singletons are left out. Union-find with path halving; each group carries the set of nodes it may
not meet and its distinct identities, so a join is checked in time proportional to the smaller group.
No group reaches across two connected components of the links (with the units' joins), so a caller may
partition one component's links alone (`components` labels them): the daemon regroups only the components
a batch's links touched.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence

import numpy as np


def partition(
    links: Iterable[tuple[int, int]],
    cannot: Iterable[tuple[int, int]] = (),
    identity: Mapping[int, Hashable] | None = None,
    apart: Callable[[Hashable, Hashable], bool] | None = None,
    units: Mapping[int, int] | None = None,
) -> list[list[int]]:
    """Groups (each sorted, ordered by first member) of int nodes joined by `links` in the order given."""
    sets = units or {}
    parent: dict[int, int] = {}
    members: dict[int, set[int]] = {}
    forbidden: dict[int, set[int]] = {}
    identities: dict[int, set[Hashable]] = {}
    known = identity or {}
    against: dict[int, set[int]] = {}
    for x, y in cannot:
        if x in sets and sets.get(y) == sets[x]:
            continue
        against.setdefault(x, set()).add(y)
        against.setdefault(y, set()).add(x)

    def root(node: int) -> int:
        if node not in parent:
            parent[node], members[node], forbidden[node] = node, {node}, set(against.get(node, ()))
            identities[node] = {known[node]} if known.get(node) is not None else set()
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    def join(ra: int, rb: int) -> None:
        small, big = (ra, rb) if len(members[ra]) <= len(members[rb]) else (rb, ra)
        parent[small] = big
        members[big] |= members.pop(small)
        forbidden[big] |= forbidden.pop(small)
        identities[big] |= identities.pop(small)

    linked = list(links)
    matched = {sets[n] for pair in linked for n in pair if n in sets}  # the sets some link reaches
    for node, unit in sets.items():
        if unit in matched and root(node) != root(unit):
            join(root(node), root(unit))
    for a, b in linked:
        ra, rb = root(a), root(b)
        if ra == rb:
            continue
        small, big = (ra, rb) if len(members[ra]) <= len(members[rb]) else (rb, ra)
        if not forbidden[big].isdisjoint(members[small]):
            continue
        if apart is not None and any(apart(x, y) for x in identities[small] for y in identities[big] if x != y):
            continue
        join(ra, rb)
    shown = (group for group in members.values() if len({sets.get(n, n) for n in group}) > 1)
    return sorted((sorted(group) for group in shown), key=lambda group: group[0])


def grouped(groups: Sequence[Sequence[int]]) -> int:
    """How many nodes are in some group."""
    return sum(len(group) for group in groups)


def components(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(nodes, label of each): the connected components of the undirected graph of edges (a[i], b[i]), nodes
    sorted, each labelled with the position of one of its component's nodes (equal labels, one component).
    Each round lowers both ends of every edge to the smaller label, then follows labels to their labels."""
    nodes, inverse = np.unique(np.concatenate([np.asarray(a, np.int64), np.asarray(b, np.int64)]),
                               return_inverse=True)  # fmt: skip
    x, y = inverse[: len(a)], inverse[len(a) :]
    labels = np.arange(len(nodes))
    while True:
        low = np.minimum(labels[x], labels[y])
        lowered = labels.copy()
        np.minimum.at(lowered, x, low)
        np.minimum.at(lowered, y, low)
        lowered = lowered[lowered]
        if np.array_equal(lowered, labels):
            return nodes, labels
        labels = lowered
