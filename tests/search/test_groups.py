"""Duplicate groups against an oracle that recomputes connected components from scratch."""

from hypothesis import given, settings
from hypothesis import strategies as st

from dedupd.search.groups import Groups


def components(nodes: set[int], edges: set[frozenset[int]]) -> set[frozenset[int]]:
    parent = {n: n for n in nodes}

    def root(n: int) -> int:
        while parent[n] != n:
            n = parent[n]
        return n

    for a, b in (tuple(e) for e in edges):
        parent[root(a)] = root(b)
    by_root: dict[int, set[int]] = {}
    for n in nodes:
        by_root.setdefault(root(n), set()).add(n)
    return {frozenset(c) for c in by_root.values() if len(c) > 1}


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 30), st.integers(0, 30)), max_size=150))
def test_incremental_groups_equal_components(ops: list[tuple[bool, int, int]]) -> None:
    groups, nodes, edges = Groups(), set(), set()
    for is_link, a, b in ops:
        if is_link and a != b:
            # a node that was removed may come back, as a re-added file does
            nodes |= {a, b}
            edges.add(frozenset((a, b)))
            groups.link(a, b)
        elif not is_link:
            nodes.discard(a)
            edges = {e for e in edges if a not in e}
            remaining = edges
            groups.remove(a, lambda x, remaining=remaining: [y for e in remaining if x in e for y in e if y != x])
        expected = components(nodes, edges)
        assert set(groups) == expected
        assert len(groups) == len(expected)
        for n in nodes:
            assert groups.group_of(n) == next((c for c in expected if n in c), None)
    assert set(Groups.from_edges([min(e) for e in edges], [max(e) for e in edges])) == components(nodes, edges)
