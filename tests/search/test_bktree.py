"""BK-tree against two oracles: brute force (what matches) and imagededup's BK-tree (in which order)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dedupd.search.bktree import BKTree


class ReferenceTree:
    """imagededup's BK-tree as the spec describes it (section 9): dict nodes, stack search."""

    def __init__(self, items: list[tuple[int, int]]) -> None:
        self.root = items[0][0]
        self.nodes: dict[int, tuple[int, dict[int, int]]] = {self.root: (items[0][1], {})}
        for key, value in items[1:]:
            at = self.root
            while True:
                dist = (self.nodes[at][0] ^ value).bit_count()
                children = self.nodes[at][1]
                if dist not in children:
                    children[dist] = key
                    self.nodes[key] = (value, {})
                    break
                at = children[dist]

    def search(self, query: int, tol: int) -> list[tuple[int, int]]:
        found, stack = [], [self.root]
        while stack:
            node = stack.pop()
            value, children = self.nodes[node]
            dist = (value ^ query).bit_count()
            if dist <= tol:
                found.append((node, dist))
            stack.extend(c for e, c in children.items() if dist - tol <= e <= dist + tol)
        return found


# few distinct bits make many equal distances, i.e. deep trees and many ties
hashes = st.one_of(st.integers(0, 2**64 - 1), st.integers(0, 2**10 - 1))


@settings(max_examples=150, deadline=None)
@given(
    values=st.lists(hashes, min_size=1, max_size=200),
    queries=st.lists(st.tuples(hashes, st.integers(0, 20)), max_size=8),
)
def test_query_order_matches_imagededup(values: list[int], queries: list[tuple[int, int]]) -> None:
    items = list(enumerate(values))
    reference = ReferenceTree(items)
    bulk = BKTree.from_items(range(len(values)), values)
    for query, tol in queries:
        expected = reference.search(query, tol)
        assert bulk.query(query, tol) == expected


@settings(max_examples=150, deadline=None)
@given(values=st.lists(hashes, max_size=120), queries=st.lists(st.tuples(hashes, st.integers(0, 64)), max_size=8))
def test_query_against_brute_force(values: list[int], queries: list[tuple[int, int]]) -> None:
    tree = BKTree.from_items(np.arange(len(values)), np.array(values, np.uint64))
    live = dict(enumerate(values))
    for value, arg in queries:
        expected = sorted((k, (v ^ value).bit_count()) for k, v in live.items() if (v ^ value).bit_count() <= arg)
        assert sorted(tree.query(value, arg, ordered=arg % 2 == 0)) == expected
    assert len(tree) == len(live)


def test_bulk_build_is_sequential_insertion_on_a_larger_set() -> None:
    rng = np.random.default_rng(5)
    values = rng.integers(0, 2**64, 5000, dtype=np.uint64)
    values[2500:3000] = values[:500] ^ np.uint64(0b1011)  # near-duplicates at distance 3
    reference = ReferenceTree(list(enumerate(values.tolist())))
    tree = BKTree.from_items(np.arange(5000), values)
    for query in values[::250].tolist():
        assert tree.query(query, 10) == reference.search(query, 10)


def test_keys_are_checked() -> None:
    with pytest.raises(ValueError):
        BKTree.from_items([1, 1], [5, 6])
    assert BKTree().query(0, 64) == []
