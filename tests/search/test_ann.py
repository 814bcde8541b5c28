"""The embedding index on its own: its candidates against the exact pairs, removals, layout, a saved file."""

from pathlib import Path

import numpy as np

from dedupd.search.ann import AnnIndex

DIM = 64
THRESHOLD = 0.8


def rows_with_copies(n: int, seed: int) -> tuple[np.ndarray, set[tuple[int, int]]]:
    """n unit rows, a quarter of them near copies of an earlier row (cosine 0.7-0.99), and the exact pairs at
    THRESHOLD or above (key i is row i)."""
    rng = np.random.default_rng(seed)
    rows = rng.standard_normal((n, DIM))
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    for i in range(1, n, 4):
        base, sim = rows[rng.integers(0, i)], rng.uniform(0.7, 0.99)
        noise = rng.standard_normal(DIM)
        noise -= (noise @ base) * base
        rows[i] = sim * base + np.sqrt(1 - sim**2) * noise / np.linalg.norm(noise)
    sims = rows @ rows.T
    pairs = {(int(a), int(b)) for a, b in zip(*np.nonzero(sims >= THRESHOLD), strict=True) if a != b}
    return rows.astype(np.float16), pairs


def found_pairs(index: AnnIndex, rows: np.ndarray) -> set[tuple[int, int]]:
    """Every (query, candidate) pair the index proposes for each row as a query, judged on the rows."""
    out = set()
    for a, candidates in enumerate(index.search_many(rows, THRESHOLD)):
        sims = rows[candidates].astype(np.float32) @ rows[a].astype(np.float32)
        out |= {(a, b) for b, s in zip(candidates.tolist(), sims.tolist(), strict=True) if b != a and s >= THRESHOLD}
    return out


def test_every_probed_pair_is_found_and_the_default_probe_finds_nearly_all() -> None:
    rows, pairs = rows_with_copies(4000, seed=1)
    assert len(pairs) > 500
    index = AnnIndex.build(np.arange(len(rows)), rows)
    assert index.cells == 63  # sqrt(4000)
    index.probe_share = 1.0  # every cell: only the codes' radius can lose a pair
    assert found_pairs(index, rows) == pairs
    index.probe_share = 0.25
    found = found_pairs(index, rows)
    assert found <= pairs and len(found) >= 0.97 * len(pairs)


def test_removed_keys_are_never_proposed_and_a_key_can_come_back(tmp_path: Path) -> None:
    rows, pairs = rows_with_copies(2000, seed=2)
    index = AnnIndex.build(np.arange(1500), rows[:1500])
    index.search_many(rows[:1], THRESHOLD)  # lays the first 1500 out by cell; the rest go to the tail
    index.add(np.arange(1500, 2000), rows[1500:])
    index.probe_share = 1.0
    copies = sorted({b for a, b in pairs if a < b})
    gone = np.array([b for b in copies if b < 1500][:20] + [b for b in copies if b >= 1500][:20])  # sorted, tail
    assert index.remove(np.concatenate([gone, [10**9]])) == len(gone)
    assert index.remove(gone) == 0 and len(index) == 2000 - len(gone)
    survivors = found_pairs(index, rows)
    assert survivors == {(a, b) for a, b in pairs if b not in set(gone.tolist())}  # a removed row still queries
    index.add(gone, rows[gone])  # a changed file's record comes back under its key
    assert found_pairs(index, rows) == pairs

    index.save(tmp_path / "index", {"count": 2000})
    assert index.removed == 0  # the save laid every row out and dropped the removed ones
    loaded = AnnIndex.load(tmp_path / "index", {"count": 2000})
    assert loaded is not None and len(loaded) == 2000
    loaded.probe_share = 1.0
    assert found_pairs(loaded, rows) == pairs


def test_a_stale_or_torn_file_is_not_loaded(tmp_path: Path) -> None:
    rows, _ = rows_with_copies(300, seed=3)
    path = tmp_path / "index"
    AnnIndex.build(np.arange(len(rows)), rows).save(path, {"count": 300, "seq": 4})
    assert AnnIndex.load(path, {"count": 300, "seq": 5}) is None
    assert AnnIndex.load(path, {"count": 300, "seq": 4}) is not None
    with path.open("ab") as stream:
        stream.write(b"x")
    assert AnnIndex.load(path, {"count": 300, "seq": 4}) is None
    AnnIndex.discard(path)
    assert not path.exists() and AnnIndex.load(path, {"count": 300, "seq": 4}) is None
