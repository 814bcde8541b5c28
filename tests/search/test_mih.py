"""Multi-index hashing against a brute-force scan, through inserts, deletes and merges."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dedupd.search.mih import MultiIndexHash


def brute(live: dict[int, int], query: int, threshold: int) -> tuple[list[int], list[int]]:
    hits = sorted((k, (v ^ query).bit_count()) for k, v in live.items() if (v ^ query).bit_count() <= threshold)
    return [k for k, _ in hits], [d for _, d in hits]


hashes = st.one_of(st.integers(0, 2**64 - 1), st.integers(0, 2**12 - 1), st.just(2**64 - 1))


@settings(max_examples=150, deadline=None)
@given(
    initial=st.lists(hashes, max_size=60),
    ops=st.lists(st.tuples(st.sampled_from(["insert", "delete", "query"]), hashes, st.integers(0, 64)), max_size=80),
    chunks=st.sampled_from([None, 3, 4, 5, 8]),
)
def test_against_brute_force(initial: list[int], ops: list[tuple[str, int, int]], chunks: int | None) -> None:
    index = MultiIndexHash.from_arrays(np.arange(len(initial)) * 2, initial, chunks=chunks)
    live = {k * 2: v for k, v in enumerate(initial)}
    next_key = 2 * len(initial)
    for op, value, arg in ops:
        if op == "insert":
            index.insert(next_key, value)
            live[next_key] = value
            next_key += 3
        elif op == "delete":
            key = sorted(live)[arg % len(live)] if live else 1
            assert index.delete(key) == (key in live)
            live.pop(key, None)
        else:
            keys, dists = index.query(value, arg)
            assert (keys.tolist(), dists.tolist()) == brute(live, value, arg)
        assert len(index) == len(live)


def test_merges_and_compaction_keep_results_exact() -> None:
    rng = np.random.default_rng(7)
    values = rng.integers(0, 2**64, 30_000, dtype=np.uint64)
    values[10_000:20_000] = values[:10_000] ^ (np.uint64(1) << rng.integers(0, 64, 10_000).astype(np.uint64))
    index = MultiIndexHash.from_arrays(np.arange(10_000), values[:10_000])
    for key in range(10_000, 30_000):  # crosses the pending-merge limit several times
        index.insert(key, int(values[key]))
    alive = np.ones(30_000, bool)
    for key in rng.choice(30_000, 12_000, replace=False).tolist():  # forces a compaction
        assert index.delete(key)
        alive[key] = False
    for query in values[rng.integers(0, 30_000, 50)].tolist():
        for threshold in (0, 4, 10, 16):
            dists = np.bitwise_count(values ^ np.uint64(query))
            expected = np.flatnonzero((dists <= threshold) & alive)
            keys, got = index.query(query, threshold)
            assert keys.tolist() == expected.tolist() and got.tolist() == dists[expected].tolist()


def test_keys_must_increase() -> None:
    index = MultiIndexHash.from_arrays([1, 5], [0, 0])
    with pytest.raises(ValueError):
        index.insert(5, 0)
    assert MultiIndexHash().query(0, 10)[0].size == 0


@pytest.mark.parametrize(("n", "tables"), [(500, True), (20_000, True), (20_000, False)])
def test_query_many_is_query_per_value(n: int, tables: bool) -> None:
    """Small (scanned), indexed with a pending tail, and a plain column."""
    rng = np.random.default_rng(5)
    values = rng.integers(0, 2**64, n, dtype=np.uint64)
    values[1::2] = values[::2] ^ (np.uint64(1) << rng.integers(0, 64, n // 2).astype(np.uint64))
    index = MultiIndexHash.from_arrays(np.arange(n - 300) * 3, values[:-300], tables=tables)
    index.insert_many(np.arange(n - 300, n) * 3, values[-300:])
    for key in range(0, 3 * n, 21):
        index.delete(key)
    queries = np.concatenate([values[rng.integers(0, n, 40)], rng.integers(0, 2**64, 10, dtype=np.uint64)])
    owners, keys, dists = index.query_many(queries, 6)
    for i, query in enumerate(queries.tolist()):
        one_keys, one_dists = index.query(query, 6)
        assert keys[owners == i].tolist() == one_keys.tolist() and dists[owners == i].tolist() == one_dists.tolist()
    assert index.values_of(keys[:5]).tolist() == values[keys[:5] // 3].tolist()
    live_keys, live_values = index.items()
    assert live_keys.tolist() == [k for k in range(0, 3 * n, 3) if k % 21]
    assert live_values.tolist() == values[live_keys // 3].tolist()
    with pytest.raises(KeyError):
        index.values_of([21])
    brute_force = np.bitwise_count(values[None, :] ^ queries[:, None]) <= 6
    brute_force[:, ::7] = False  # the deleted keys 0, 21, 42, ... are every 7th value
    expected = sorted(zip(*np.nonzero(brute_force), strict=True))
    assert sorted(zip(owners.tolist(), (keys // 3).tolist(), strict=True)) == expected
