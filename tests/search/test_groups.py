"""Duplicate groups: plain components without cannot-links, never a cannot-link pair inside a group."""

import itertools
import random

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from dedupd.search import groups as grouping
from dedupd.search.groups import partition


def components(edges: list[tuple[int, int]]) -> set[frozenset[int]]:
    groups: list[set[int]] = []
    for a, b in edges:
        touching = [g for g in groups if a in g or b in g]
        merged = set().union({a, b}, *touching)
        groups = [g for g in groups if g not in touching] + [merged]
    return {frozenset(g) for g in groups if len(g) > 1}


edge_lists = st.lists(st.tuples(st.integers(0, 25), st.integers(0, 25)).filter(lambda e: e[0] != e[1]), max_size=80)


@settings(max_examples=300, deadline=None)
@given(edge_lists)
def test_without_cannot_links_groups_are_the_connected_components(edges: list[tuple[int, int]]) -> None:
    assert {frozenset(g) for g in partition(edges)} == components(edges)


@settings(max_examples=300, deadline=None)
@given(edge_lists, edge_lists)
def test_no_group_holds_a_cannot_link_pair_and_every_group_is_connected(
    edges: list[tuple[int, int]], cannot: list[tuple[int, int]]
) -> None:
    groups = partition(edges, cannot)
    apart = {frozenset(c) for c in cannot}
    for group in groups:
        assert not any(frozenset(p) in apart for p in itertools.combinations(group, 2))
        inside = [e for e in edges if e[0] in group and e[1] in group]
        assert components(inside) == {frozenset(group)}
    assert sum(len(g) for g in groups) == len({n for g in groups for n in g})


def test_a_stripped_copy_does_not_pull_a_burst_together() -> None:
    """Frames 0 and 1 are different captures; 2 is a copy of frame 0 that also looks like frame 1."""
    assert partition([(0, 2), (1, 2)], cannot=[(0, 1)]) == [[0, 2]]
    assert partition([(1, 2), (0, 2)], cannot=[(0, 1)]) == [[1, 2]]  # the stronger link, given first, wins


def test_components_labels_the_connected_components() -> None:
    rng = random.Random(3)
    for _ in range(50):
        edges = [(rng.randrange(200), rng.randrange(200)) for _ in range(rng.randint(1, 150))]
        edges += [(i, i + 1) for i in range(300, 300 + rng.randint(0, 60))]  # a long chain
        rng.shuffle(edges)
        a, b = (np.array(column, np.int64) for column in zip(*edges, strict=True))
        nodes, labels = grouping.components(a, b)
        found = {frozenset(nodes[labels == label].tolist()) for label in set(labels.tolist())}
        assert {s for s in found if len(s) > 1} == components([e for e in edges if e[0] != e[1]])
        assert sorted(nodes.tolist()) == sorted({n for edge in edges for n in edge})
