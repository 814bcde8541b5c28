"""Embedding index against numpy on the same float16 rows."""

import numpy as np
import pytest

from dedupd.search.vectors import EmbeddingIndex


def unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    rows = rng.standard_normal((n, dim))
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_threshold_and_top_k_match_numpy_through_deletes() -> None:
    rng = np.random.default_rng(3)
    rows = unit(rng, 3000, 64)
    rows[1500:1600] = unit(rng, 1, 64) + 0.05 * rows[1500:1600]  # a cluster of near copies
    rows = (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float16)
    keys = np.arange(3000) * 2 + 1
    index = EmbeddingIndex.from_arrays(keys[:1000], rows[:1000])
    index.insert_many(keys[1000:], rows[1000:])
    gone = rng.choice(3000, 1200, replace=False)
    for slot in gone.tolist():
        assert index.delete(int(keys[slot]))
    assert not index.delete(int(keys[gone[0]]))
    alive = np.ones(3000, bool)
    alive[gone] = False
    exact = rows.astype(np.float64) @ rows[1550].astype(np.float64)
    got_keys, got_sims = index.search(rows[1550], 0.9)
    expected = np.flatnonzero((exact >= 0.9) & alive)
    assert sorted(got_keys.tolist()) == sorted(keys[expected].tolist())
    assert np.allclose(got_sims, np.sort(exact[expected])[::-1], atol=1e-3)
    top_keys, top_sims = index.top_k(rows[1550], 5)
    assert top_keys.tolist() == keys[np.argsort(-np.where(alive, exact, -9))[:5]].tolist()
    assert len(index) == 1800


def test_search_many_is_search_per_row() -> None:
    rng = np.random.default_rng(4)
    rows = unit(rng, 500, 32).astype(np.float16)
    index = EmbeddingIndex.from_arrays(np.arange(500), rows)
    many = index.search_many(rows[:20], 0.3)
    for row, (keys, sims) in zip(rows[:20], many, strict=True):
        one = index.search(row, 0.3)
        assert keys.tolist() == one[0].tolist() and np.array_equal(sims, one[1])


def test_keys_must_increase() -> None:
    index = EmbeddingIndex(4)
    index.insert_many(np.array([3]), np.ones((1, 4)))
    with pytest.raises(ValueError):
        index.insert_many(np.array([2]), np.ones((1, 4)))
    assert index.search(np.ones(4), 0.5)[0].tolist() == [3]


def test_rows_of_live_keys() -> None:
    rows = unit(np.random.default_rng(5), 10, 8).astype(np.float16)
    index = EmbeddingIndex.from_arrays(np.arange(10) * 2, rows)
    index.delete(4)
    got, found = index.rows_of(np.array([18, 0, 4, 5]))
    assert found.tolist() == [True, True, False, False]
    assert np.array_equal(got[:2], rows[[9, 0]]) and not got[2:].any()
    assert EmbeddingIndex(8).rows_of(np.array([1]))[1].tolist() == [False]
