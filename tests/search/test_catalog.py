"""Catalog: store + live index in step; groups, near, to-remove, rebuild at open, relinking."""

import random
from pathlib import Path

import numpy as np
import pytest

from dedupd.errors import SkipReason, StoreError
from dedupd.records import Encoding, FileKey, FileRecord, Match
from dedupd.service.catalog import Catalog, IndexConfig
from dedupd.store import Move, Removal

CONFIG = IndexConfig({"phash": 4, "dhash": 2})


def rec(path: str, phash: int, *, digest: int | None = None, pixels: int = 100, size: int = 1000,
        mtime: int = 0, emb: np.ndarray | None = None) -> FileRecord:  # fmt: skip
    enc = Encoding((digest if digest is not None else phash + 2**40).to_bytes(16, "big"), pixels, 1,
                   {"phash": phash, "dhash": phash ^ 2**63}, emb)  # fmt: skip
    return FileRecord(FileKey(path, 1, abs(hash(path)) % 2**40, size, mtime), enc)


def oracle_groups(catalog: Catalog) -> set[frozenset[str]]:
    """Connected components of 'same digest or phash <= 4 or dhash <= 2' over the stored records."""
    recs = [r for _, r in catalog.store.iter_records() if r.encoding is not None]
    parent = list(range(len(recs)))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for i, a in enumerate(recs):
        for j, b in enumerate(recs[:i]):
            ea, eb = a.encoding, b.encoding
            assert ea is not None and eb is not None
            if (ea.digest == eb.digest or (ea.hashes["phash"] ^ eb.hashes["phash"]).bit_count() <= 4
                    or (ea.hashes["dhash"] ^ eb.hashes["dhash"]).bit_count() <= 2):  # fmt: skip
                parent[root(i)] = root(j)
    comps: dict[int, set[str]] = {}
    for i, r in enumerate(recs):
        comps.setdefault(root(i), set()).add(r.key.path)
    return {frozenset(c) for c in comps.values() if len(c) > 1}


def shown(catalog: Catalog) -> set[frozenset[str]]:
    return {frozenset(g.paths) for g in catalog.groups()}


def test_groups_near_and_matches_of_a_batch(tmp_path: Path) -> None:
    with Catalog.open(tmp_path, CONFIG) as catalog:
        applied = catalog.apply(
            [rec("/p/a", 0b0), rec("/p/b", 0b111), rec("/p/c", 0xFF00), rec("/p/a2", 0b0, digest=7)]
        )
        assert applied.matches["/p/b"] == [Match("/p/a", "phash", distance=3), Match("/p/a2", "phash", distance=3)]
        applied = catalog.apply([rec("/p/copy", 0xFF00, digest=0xFF00 + 2**40)])
        assert applied.matches == {"/p/copy": [Match("/p/c", "dhash", distance=0), Match("/p/c", "exact", distance=0),
                                               Match("/p/c", "phash", distance=0)]}  # fmt: skip
        assert shown(catalog) == {frozenset({"/p/a", "/p/a2", "/p/b"}), frozenset({"/p/c", "/p/copy"})}
        assert catalog.near("/p/a", "phash") == [
            Match("/p/a2", "phash", distance=0),
            Match("/p/b", "phash", distance=3),
        ]
        assert catalog.near("/p/a", "phash", threshold=1) == [Match("/p/a2", "phash", distance=0)]
        assert [m.path for m in catalog.near(rec("/x", 0xFF00).encoding, "phash")] == ["/p/c", "/p/copy"]
        assert catalog.near("/p/c", "exact") == [Match("/p/copy", "exact", distance=0)]
        assert shown(catalog) == oracle_groups(catalog)
        group = next(g for g in catalog.groups() if "/p/c" in g.paths)
        assert ("/p/c", Match("/p/copy", "exact", distance=0)) in group.links
        with pytest.raises(StoreError):
            catalog.near("/p/nothing", "phash")


def test_deleted_or_changed_files_stop_matching_and_groups_split(tmp_path: Path) -> None:
    with Catalog.open(tmp_path, CONFIG) as catalog:
        catalog.apply([rec("/p/a", 0b0), rec("/p/b", 0b1111), rec("/p/c", 0b11111111)])  # a~b~c, not a~c
        assert shown(catalog) == {frozenset({"/p/a", "/p/b", "/p/c"})}
        catalog.apply([rec("/p/b", 2**64 - 1)])  # b changed: the bridge is gone
        assert shown(catalog) == set() and catalog.near("/p/a", "phash") == []
        catalog.apply([rec("/p/d", 0b1111), Removal("/p/a")])
        assert shown(catalog) == {frozenset({"/p/c", "/p/d"})}
        catalog.apply([Move("/p", "/q")])
        assert shown(catalog) == {frozenset({"/q/c", "/q/d"})}
        assert catalog.stats()["index"] == {"phash": 3, "dhash": 3}


def test_to_remove_keep_policy_and_protected_roots(tmp_path: Path) -> None:
    with Catalog.open(tmp_path, CONFIG) as catalog:
        catalog.apply([
            rec("/lib/small", 0, pixels=10, size=9000), rec("/lib/big", 0, pixels=20, size=10),
            rec("/lib/big_same_px", 0, pixels=20, size=5),
            rec("/in/x2", 0xF0F0, mtime=5), rec("/in/x1", 0xF0F0, mtime=5), rec("/in/old", 0xF0F0, mtime=1),
            rec("/ref/keep", 2**48 - 1, pixels=1), rec("/in/better", 2**48 - 1, pixels=50),
        ])  # fmt: skip
        # most pixels, then largest file, then oldest mtime, then path
        assert catalog.to_remove() == ["/in/x1", "/in/x2", "/lib/big_same_px", "/lib/small", "/ref/keep"]
        assert catalog.to_remove(protected_roots=["/ref"]) == [
            "/in/better", "/in/x1", "/in/x2", "/lib/big_same_px", "/lib/small",
        ]  # fmt: skip
        assert catalog.to_remove(under="/in") == ["/in/x1", "/in/x2"]
        assert [g.paths for g in catalog.groups(under="/in")] == [("/in/old", "/in/x1", "/in/x2")]


def test_rebuild_at_open_and_relink_when_thresholds_change(tmp_path: Path) -> None:
    with Catalog.open(tmp_path, CONFIG) as catalog:
        catalog.apply([rec("/p/a", 0), rec("/p/b", 0b11), rec("/p/c", 0b11111111),
                       FileRecord(FileKey("/p/bad", 1, 9, 1, 1), skip=SkipReason.DECODE_ERROR)])  # fmt: skip
        before = catalog.groups()
    with Catalog.open(tmp_path, CONFIG) as catalog:
        assert catalog.groups() == before and shown(catalog) == {frozenset({"/p/a", "/p/b"})}
        assert catalog.stats()["records"] == {"encoded": 3, "skipped:decode_error": 1}
    with Catalog.open(tmp_path, IndexConfig({"phash": 6}, exact=False)) as catalog:
        assert shown(catalog) == {frozenset({"/p/a", "/p/b", "/p/c"})}
        assert catalog.groups(method="phash")[0].paths == ("/p/a", "/p/b", "/p/c")
    with Catalog.open(tmp_path, IndexConfig({"phash": 1}, exact=False)) as catalog:
        assert shown(catalog) == set()
        catalog.reconfigure(IndexConfig({"phash": 2}, exact=False))  # a reload, without reopening
        assert shown(catalog) == {frozenset({"/p/a", "/p/b"})}
        assert catalog.stats()["index"] == {"phash": 3}


def test_cnn_links_and_search(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    base = rng.standard_normal(16)
    near = base + 0.05 * rng.standard_normal(16)
    far = rng.standard_normal(16)
    config = IndexConfig({"phash": 0}, cnn_min_similarity=0.95, exact=False)
    unit = [v / np.linalg.norm(v) for v in (base, near, far)]
    with Catalog.open(tmp_path, config, model_id="test-model", dim=16) as catalog:
        catalog.apply([rec("/p/a", 1, emb=unit[0]), rec("/p/b", 2**62, emb=unit[2])])
        applied = catalog.apply([rec("/p/c", 2**63, emb=unit[1])])
        assert [m.path for m in applied.matches["/p/c"]] == ["/p/a"] and applied.matches["/p/c"][0].method == "cnn"
        assert [m.path for m in catalog.near("/p/c", "cnn")] == ["/p/a"]
        assert [m.path for m in catalog.near("/p/c", "cnn", min_similarity=-1.0)] == ["/p/a", "/p/b"]
    with Catalog.open(tmp_path, config, model_id="test-model", dim=16) as catalog:
        assert shown(catalog) == {frozenset({"/p/a", "/p/c"})}


def test_random_batches_against_the_oracle(tmp_path: Path) -> None:
    rng = random.Random(11)
    names = [f"/r/{d}/{i}" for d in "abc" for i in range(12)]
    with Catalog.open(tmp_path, CONFIG) as catalog:
        for step in range(40):
            batch = []
            for _ in range(rng.randint(1, 6)):
                roll = rng.random()
                if roll < 0.6:  # few bits in play, so matches are common
                    batch.append(rec(rng.choice(names), rng.getrandbits(9), digest=rng.randint(0, 40)))
                elif roll < 0.85:
                    batch.append(Removal(rng.choice(names)))
                else:
                    batch.append(Move(rng.choice(names), rng.choice(names)))
            catalog.apply(batch)
            assert shown(catalog) == oracle_groups(catalog), step
        assert catalog.store.check() == []
        final = shown(catalog)
    with Catalog.open(tmp_path, CONFIG) as catalog:
        assert shown(catalog) == final


def test_a_failed_commit_changes_neither_store_nor_index(tmp_path: Path) -> None:
    with Catalog.open(tmp_path, CONFIG) as catalog:
        catalog.apply([rec("/p/a", 0)])
        broken = FileRecord(FileKey("/p/bad", 1, 2, 3, 4), rec("/p/x", 1).encoding, SkipReason.TRUNCATED)
        with pytest.raises(StoreError):
            catalog.apply([rec("/p/b", 1), broken])  # b would match a, but the batch cannot commit
        assert catalog.store.get("/p/b") is None and catalog.near("/p/a", "phash") == []
        assert shown(catalog) == set() and catalog.stats()["index"] == {"phash": 1, "dhash": 1}
