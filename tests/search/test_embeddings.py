"""The catalog's ANN embedding index on a real store: the exact scan's pairs, saved stamped, rebuilt when stale."""

from pathlib import Path

import numpy as np

from dedupd.catalog import ANN_FILE, LEGACY_ANN_FILE, Catalog, IndexConfig
from dedupd.records import Encoding, FileKey, FileRecord, Removal
from dedupd.search.ann import AnnIndex
from dedupd.search.embeddings import EmbeddingSearch
from dedupd.search.matcher import MatcherSettings
from dedupd.store import Store

DIM = 64
RULE = IndexConfig(MatcherSettings(hash_threshold=4, hash_confirm_similarity=0.5, cnn_min_similarity=0.9,
                                   hash_only_threshold=2))  # fmt: skip
STORE = {"model_id": "test-model", "dim": DIM}
BUILD_DEADLINE = 300.0  # seconds a background build of a few hundred rows may take on a loaded machine


def library(n: int, seed: int) -> list[FileRecord]:
    """n records with random hashes; a third are near copies (cosine ~0.85-0.99) of an earlier record."""
    rng = np.random.default_rng(seed)
    rows = rng.standard_normal((n, DIM))
    for i in range(1, n, 3):
        rows[i] = rows[rng.integers(0, i)] / np.sqrt(DIM) * rng.uniform(2, 6) + rng.standard_normal(DIM) / np.sqrt(DIM)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    hashes = rng.integers(0, 2**63, n, dtype=np.int64)
    return [
        FileRecord(FileKey(f"/p/{seed}/{i:05d}.jpg", 1, 10_000 * seed + i, 1000, 0),
                   Encoding(int(hashes[i]).to_bytes(16, "big"), 100, 1, {"dct": int(hashes[i])}, rows[i]))
        for i in range(n)
    ]  # fmt: skip


def linked_pairs(catalog: Catalog) -> set[tuple[str, str, str]]:
    a, b, methods, codes, _ = catalog.store.links()
    paths = catalog.store.paths(set(a.tolist()) | set(b.tolist()))
    return {
        (*sorted((paths[x], paths[y])), methods[c])
        for x, y, c in zip(a.tolist(), b.tolist(), codes.tolist(), strict=True)
    }


def vectors(catalog: Catalog) -> EmbeddingSearch:
    found = catalog._index.vectors
    assert found is not None
    return found


def test_ann_index_gives_the_exact_scans_pairs_is_saved_and_loaded(tmp_path: Path) -> None:
    records = library(400, seed=1)
    with Catalog.open(tmp_path / "exact", RULE, **STORE, ann_min_rows=10**9) as exact:  # type: ignore[arg-type]
        exact.apply(records)
        expected = linked_pairs(exact)
        assert not vectors(exact).approximate
    assert len(expected) > 50

    (tmp_path / "ann").mkdir()
    (tmp_path / "ann" / LEGACY_ANN_FILE).write_bytes(b"an older build's index")
    catalog = Catalog.open(tmp_path / "ann", RULE, **STORE, ann_min_rows=150)  # type: ignore[arg-type]
    assert not (tmp_path / "ann" / LEGACY_ANN_FILE).exists()
    catalog.apply(records[:200])  # past the threshold: built in the background, the scan serving meanwhile
    assert vectors(catalog).wait_built(BUILD_DEADLINE)
    assert vectors(catalog).approximate
    catalog.apply(records[200:])  # searched through the ANN index, judged on the stored rows
    assert (tmp_path / "ann" / ANN_FILE).exists()  # the built index was saved at the next batch
    assert linked_pairs(catalog) == expected
    catalog.close()

    stamp_file = tmp_path / "ann" / (ANN_FILE + ".json")
    assert stamp_file.exists()
    with Catalog.open(tmp_path / "ann", RULE, **STORE, ann_min_rows=150) as again:  # type: ignore[arg-type]
        assert vectors(again).approximate and not vectors(again).building  # loaded, not rebuilt
        loaded = vectors(again)._ann
        assert loaded is not None and len(loaded) == len(records)
        near_copy = records[1].key.path
        assert again.matches(near_copy) == exact_matches(tmp_path, records, near_copy)


def exact_matches(tmp_path: Path, records: list[FileRecord], path: str) -> list[object]:
    with Catalog.open(tmp_path / "exact", RULE, **STORE, ann_min_rows=10**9) as exact:  # type: ignore[arg-type]
        return list(exact.matches(path))


def test_stale_index_is_rebuilt_and_deletes_are_honoured(tmp_path: Path) -> None:
    records = library(300, seed=2)
    state = tmp_path / "state"
    with Catalog.open(state, RULE, **STORE, ann_min_rows=100) as catalog:  # type: ignore[arg-type]
        catalog.apply(records[:250])
        assert vectors(catalog).wait_built(BUILD_DEADLINE)
    with Store.open(state, **STORE) as store:  # a change the saved index does not know
        store.commit(records[250:])
        stale = store.embedding_stamp()
    assert AnnIndex.load(state / ANN_FILE, stale) is None

    with Catalog.open(state, RULE, **STORE, ann_min_rows=100) as catalog:  # type: ignore[arg-type]
        assert vectors(catalog).wait_built(BUILD_DEADLINE)
        assert vectors(catalog).approximate
        rid_of = {rec.key.path: rid for rid, rec in catalog.store.iter_records()}
        newest = records[-1]  # stored behind the index's back: found once rebuilt
        row = np.asarray(newest.encoding.embedding).reshape(1, -1)  # type: ignore[union-attr]
        assert rid_of[newest.key.path] in vectors(catalog).search_many(row, 0.9)[0].tolist()

        source = records[1]  # a near copy of an earlier record: its match goes when that record goes
        matched = [m.path for m in catalog.matches(source.key.path)]
        assert matched
        catalog.apply([Removal(matched[0])])
        assert matched[0] not in [m.path for m in catalog.matches(source.key.path)]
        gone = rid_of[matched[0]]
        query = np.asarray(source.encoding.embedding).reshape(1, -1)  # type: ignore[union-attr]
        assert gone not in vectors(catalog).search_many(query, 0.5)[0].tolist()
    with Catalog.open(state, RULE, **STORE, ann_min_rows=100) as catalog:  # type: ignore[arg-type]
        assert vectors(catalog).approximate  # saved at close with the removal
        assert matched[0] not in [m.path for m in catalog.matches(source.key.path)]
