"""Catalog: store + live index in step under the fused duplicate rule; queries, ignore, relinking."""

import io
import logging
import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import skimage
from PIL import Image

from dedupd.catalog import Catalog, IndexConfig
from dedupd.errors import SkipReason, StoreError, StoreVersionMismatch
from dedupd.imaging.encode import encode_bytes
from dedupd.imaging.hashing import bits_to_int, dihedral_variants, int_to_bits, oriented_variants
from dedupd.records import Capture, Encoding, FileKey, FileRecord, Match, Move, Removal
from dedupd.records import StoreChange as Change
from dedupd.search.groups import partition
from dedupd.search.matcher import MatcherSettings, all_pairs, evidence_rank
from dedupd.store import Store

DIM = 8
RULE = MatcherSettings(hash_threshold=4, hash_confirm_similarity=0.5, cnn_min_similarity=0.9, hash_only_threshold=2)
HASH_ONLY = IndexConfig(RULE.without_cnn())
WITH_CNN = IndexConfig(RULE)
CNN_STORE = {"model_id": "test-model", "dim": DIM}
FAR = [random.Random(seed).getrandbits(63) for seed in range(3)]  # dct hashes far from small ones, in any orientation


def unit(*values: float) -> np.ndarray:
    vector = np.zeros(DIM)
    vector[: len(values)] = values
    return vector / np.linalg.norm(vector)


def rec(path: str, dct: int, *, digest: int | None = None, emb: np.ndarray | None = None, pixels: int = 100,
        size: int = 1000, mtime: int = 0) -> FileRecord:  # fmt: skip
    """A record whose imagededup-style hashes are fixed functions of `dct` (phash = dct, ahash = ~dct...)."""
    hashes = {"dct": dct, "phash": dct, "ahash": dct ^ (2**64 - 1), "dhash": dct ^ 1, "whash": dct ^ 3}
    enc = Encoding((digest if digest is not None else dct + 2**40).to_bytes(16, "big"), pixels, 1, hashes, emb)
    return FileRecord(FileKey(path, 1, abs(hash(path)) % 2**40, size, mtime), enc)


def variant(dct: int, k: int) -> int:
    """The dct hash of the same picture rotated or mirrored (k in 1..7)."""
    return dihedral_variants(int_to_bits(dct))[k]


def stored_encodings(catalog: Catalog) -> list[tuple[int, str, Encoding]]:
    """(rid, path, encoding with its embedding) of every encoded record."""
    found = []
    for rid, record in catalog.store.iter_records():
        full = catalog.store.get(record.key.path, embedding=True)
        if full is not None and full.encoding is not None:
            found.append((rid, record.key.path, full.encoding))
    return found


def oracle_groups(catalog: Catalog, settings: MatcherSettings) -> set[frozenset[str]]:
    """Groups of the fused rule over every pair of stored records (matcher.all_pairs, no index): joined
    strongest pair first (ties by path), never joining two files the user ignored as a pair."""
    stored = stored_encodings(catalog)
    if not stored:
        return set()
    rids, paths, encodings = zip(*stored, strict=True)
    first_of = {enc.digest: i for i, enc in enumerate(encodings)}
    digest_ids = np.array([first_of[enc.digest] for enc in encodings])
    variants = np.array([dihedral_variants(int_to_bits(enc.hashes["dct"])) for enc in encodings], np.uint64)
    vectors = [enc.embedding for enc in encodings]
    with_cnn = settings.cnn_enabled and all(v is not None for v in vectors)
    embeddings = np.stack(vectors).astype(np.float32) if with_cnn else None  # type: ignore[arg-type]
    ignored = set(catalog.store.ignored())
    pairs = [p for p in all_pairs(digest_ids, variants, embeddings, settings)
             if tuple(sorted((rids[p.first], rids[p.second]))) not in ignored]  # fmt: skip
    pairs.sort(key=lambda p: (evidence_rank(p.method, float(np.float32(p.score))), min(paths[p.first], paths[p.second]),
                              max(paths[p.first], paths[p.second])))
    at = {rid: i for i, rid in enumerate(rids)}
    cannot = [(at[a], at[b]) for a, b in ignored if a in at and b in at]
    groups = partition(((p.first, p.second) for p in pairs), cannot)
    return {frozenset(paths[i] for i in group) for group in groups}


def shown(catalog: Catalog) -> set[frozenset[str]]:
    return {frozenset(g.paths) for g in catalog.groups()}


def test_oriented_variants_are_dihedral_variants() -> None:
    hashes = np.random.default_rng(2).integers(0, 2**64, 200, dtype=np.uint64)
    assert [bits_to_int(int_to_bits(value)) for value in hashes.tolist()] == hashes.tolist()
    expected = [dihedral_variants(int_to_bits(value)) for value in hashes.tolist()]
    assert oriented_variants(hashes).tolist() == expected


def test_orientation_variants_are_linked_at_distance_zero(tmp_path: Path) -> None:
    base = 0x0123_4567_89AB_CDEF & (2**63 - 1)
    with Catalog.open(tmp_path, HASH_ONLY) as catalog:
        catalog.apply([rec("/p/a", base)])
        applied = catalog.apply([rec("/p/rot90", variant(base, 5)), rec("/p/mirror", variant(base, 1))])
        assert applied.matches == {
            "/p/rot90": [Match("/p/a", "phash", distance=0)],
            "/p/mirror": [Match("/p/a", "phash", distance=0), Match("/p/rot90", "phash", distance=0)],
        }
        assert catalog.near("/p/a", "dct") == [Match("/p/mirror", "dct", distance=0),
                                               Match("/p/rot90", "dct", distance=0)]  # fmt: skip
        assert catalog.near("/p/a", "phash", threshold=20) == []  # the imagededup-style hash is not oriented
        assert shown(catalog) == {frozenset({"/p/a", "/p/rot90", "/p/mirror"})}


def test_a_close_hash_needs_the_cnn_to_agree(tmp_path: Path) -> None:
    close = 0b1  # one bit from 0
    with Catalog.open(tmp_path, WITH_CNN, **CNN_STORE) as catalog:  # type: ignore[arg-type]
        catalog.apply([rec("/p/a", 0, emb=unit(1, 0))])
        applied = catalog.apply([
            rec("/p/lookalike", close, emb=unit(0, 1)),  # 1 bit from a, similarity 0: rejected
            rec("/p/edit", close << 1, emb=unit(1, 0.5)),  # 1 bit from a, 0.89 confirms (2 from lookalike, 0.45 not)
            rec("/p/crop", FAR[0], emb=unit(1, 0.1)),  # far hash; the CNN alone: 0.995 to a, 0.93 to edit
            rec("/p/noemb", 0b11),  # no embedding: the hash-only rule (at most 2 bits)
        ])  # fmt: skip
        assert "/p/lookalike" not in applied.matches
        assert applied.matches["/p/edit"] == [Match("/p/a", "phash", distance=1)]
        assert [(m.path, m.method) for m in applied.matches["/p/crop"]] == [("/p/a", "cnn"), ("/p/edit", "cnn")]
        assert [m.similarity for m in applied.matches["/p/crop"]] == [pytest.approx(0.995, abs=1e-3),
                                                                       pytest.approx(0.934, abs=1e-3)]  # fmt: skip
        assert applied.matches["/p/noemb"] == [Match("/p/edit", "phash", distance=1),
                                               Match("/p/lookalike", "phash", distance=1),
                                               Match("/p/a", "phash", distance=2)]  # fmt: skip
        assert catalog.groups(method="cnn")[0].paths == ("/p/a", "/p/crop", "/p/edit")
        assert shown(catalog) == {frozenset({"/p/a", "/p/edit", "/p/crop", "/p/noemb", "/p/lookalike"})}


def test_one_applied_match_per_arriving_duplicate(tmp_path: Path) -> None:
    with Catalog.open(tmp_path, HASH_ONLY) as catalog:
        applied = catalog.apply([rec("/p/a", 0), rec("/p/x", FAR[0]), rec("/p/b", 0)])  # b: a later copy of a
        assert applied.matches == {"/p/b": [Match("/p/a", "exact", distance=0)]}
        applied = catalog.apply([rec("/p/c", 0b1)])
        # b is a's byte copy: the class is linked (and reported) through its representative a, once
        assert applied.matches == {"/p/c": [Match("/p/a", "phash", distance=1)]}
        assert shown(catalog) == {frozenset({"/p/a", "/p/b", "/p/c"})}
        assert [m.path for m in catalog.matches("/p/c")] == ["/p/a", "/p/b"]  # a query still names both
        applied = catalog.apply([rec("/p/c", FAR[1])])  # c changed: matches nothing any more
        assert applied.matches == {} and shown(catalog) == {frozenset({"/p/a", "/p/b"})}


def test_groups_near_matches_and_explain(tmp_path: Path) -> None:
    with Catalog.open(tmp_path, WITH_CNN, **CNN_STORE) as catalog:  # type: ignore[arg-type]
        catalog.apply([
            rec("/p/a", 0, emb=unit(1, 0)), rec("/p/b", 0b111, emb=unit(1, 0.4)), rec("/p/c", 0xFF00, emb=unit(0, 1)),
            rec("/p/copy", 0xFF00, digest=0xFF00 + 2**40, emb=unit(0, 1)),
        ])  # fmt: skip
        assert shown(catalog) == {frozenset({"/p/a", "/p/b"}), frozenset({"/p/c", "/p/copy"})}
        assert catalog.matches("/p/a") == [Match("/p/b", "phash", distance=3)]  # 3 bits, similarity 0.93
        probe = rec("/x", 0b11, emb=unit(1, 0.1)).encoding
        assert probe is not None
        assert catalog.matches(probe) == [Match("/p/b", "phash", distance=1), Match("/p/a", "phash", distance=2)]
        assert catalog.near(probe, "exact") == []
        assert catalog.near("/p/c", "exact") == [Match("/p/copy", "exact", distance=0)]
        assert catalog.near(probe, "phash", threshold=4) == [Match("/p/b", "phash", distance=1),
                                                             Match("/p/a", "phash", distance=2)]  # fmt: skip
        assert [m.path for m in catalog.near(probe, "phash")] == ["/p/b", "/p/a", "/p/c", "/p/copy"]  # imagededup's 10
        assert catalog.near(probe, "ahash", threshold=1) == [Match("/p/b", "ahash", distance=1)]
        assert [m.path for m in catalog.near(probe, "dct")] == ["/p/b", "/p/a"]
        assert [m.path for m in catalog.near(probe, "cnn")] == ["/p/a", "/p/b"]
        assert [m.path for m in catalog.near(probe, "cnn", min_similarity=-1)] == ["/p/a", "/p/b", "/p/c", "/p/copy"]
        explained = catalog.explain(probe, ["/p/a", "/p/c"])
        similarity = pytest.approx(0.995, abs=1e-3)
        rule_evidence = {"exact": False, "oriented_distance": 2, "similarity": similarity,
                         "phash": 2, "ahash": 2, "dhash": 2, "whash": 2, "decision": "phash"}  # fmt: skip
        assert {key: explained["/p/a"][key] for key in rule_evidence} == rule_evidence
        # these records carry no capture identity nor thumbnail: no tier evidence, the rule's verdict stands
        assert explained["/p/a"]["tier"] == "duplicate" and explained["/p/a"]["metadata"] is None
        assert explained["/p/a"]["pixels"] is None
        assert explained["/p/c"]["decision"] is None and explained["/p/c"]["tier"] is None
        assert explained["/p/c"]["similarity"] == pytest.approx(0.0995, abs=1e-3)
        with pytest.raises(StoreError, match="/p/nothing"):
            catalog.explain(probe, ["/p/a", "/p/nothing"])
        with pytest.raises(StoreError):
            catalog.near("/p/nothing", "phash")
        with pytest.raises(StoreError, match="unknown method"):
            catalog.near(probe, "md5")
        assert catalog.stats()["index"] == {"dct": 4, "cnn": 4}


def test_deleted_or_changed_files_stop_matching_and_groups_split(tmp_path: Path) -> None:
    with Catalog.open(tmp_path, HASH_ONLY) as catalog:
        catalog.apply([rec("/p/a", 0b0), rec("/p/b", 0b11), rec("/p/c", 0b1111)])  # a~b~c, not a~c
        assert shown(catalog) == {frozenset({"/p/a", "/p/b", "/p/c"})}
        catalog.apply([rec("/p/b", FAR[0])])  # b changed: the bridge is gone
        assert shown(catalog) == set() and catalog.matches("/p/a") == []
        catalog.apply([rec("/p/d", 0b11), Removal("/p/a")])
        assert shown(catalog) == {frozenset({"/p/c", "/p/d"})}
        catalog.apply([Move("/p", "/q")])
        assert shown(catalog) == {frozenset({"/q/c", "/q/d"})}
        assert catalog.stats()["index"] == {"dct": 3}


def test_to_remove_keep_policy_and_protected_roots(tmp_path: Path) -> None:
    with Catalog.open(tmp_path, HASH_ONLY) as catalog:
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
        assert catalog.to_remove(method="cnn") == []


def test_ignored_pairs_stay_apart_across_batches_and_reopening(tmp_path: Path) -> None:
    with Catalog.open(tmp_path, HASH_ONLY) as catalog:
        catalog.apply([rec("/p/a", 0), rec("/p/b", 0b1), rec("/p/far", FAR[0])])
        assert catalog.ignore(["/p/a", "/p/b"]) == 1 and catalog.ignore(["/p/b", "/p/a"]) == 0
        assert shown(catalog) == set() and catalog.to_remove() == [] and catalog.matches("/p/a") == []
        with pytest.raises(StoreError, match="/p/nope"):
            catalog.ignore(["/p/a", "/p/nope"])
        applied = catalog.apply([rec("/p/a", 0, mtime=7), Move("/p/b", "/p/b2")])  # same content re-encoded; a move
        assert applied.matches == {} and shown(catalog) == set()
    with Catalog.open(tmp_path, HASH_ONLY) as catalog:
        assert shown(catalog) == set() and catalog.stats()["ignored"] == 1
        applied = catalog.apply([rec("/p/c", 0b10)])  # matches both; one group would hold the ignored pair
        assert applied.matches == {"/p/c": [Match("/p/a", "phash", distance=1), Match("/p/b2", "phash", distance=2)]}
        assert shown(catalog) == {frozenset({"/p/a", "/p/c"})}  # c joins its stronger match; b2 stays apart
        assert {(x, m.path) for x, m in catalog.groups()[0].links} == {("/p/a", "/p/c")}
        assert catalog.ignored_pairs() == [("/p/a", "/p/b2")]
        assert catalog.unignore(["/p/b2", "/p/a"]) == 1 and catalog.ignored_pairs() == []
        assert shown(catalog) == {frozenset({"/p/a", "/p/b2", "/p/c"})}  # judged again: linked once more
        assert catalog.ignore(["/p/a", "/p/b2"]) == 1
        assert catalog.ignore(["/p/a", "/p/b2", "/p/c"]) == 2 and shown(catalog) == set()
        catalog.apply([rec("/p/a", 0b11)])  # a changed content: its ignores are gone, not b2-c's
        assert shown(catalog) == {frozenset({"/p/a", "/p/b2"})}  # a-b2 first (ties by path); c stays apart
        assert catalog.stats()["ignored"] == 1 and catalog.store.check() == []


def test_set_matcher_and_reopening_relink_with_the_new_rule(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dedupd.catalog")
    records = [
        rec("/p/a", 0, emb=unit(1, 0)), rec("/p/b", 0b11, emb=unit(1, 0.3)), rec("/p/c", 0b1111, emb=unit(0, 1)),
        rec("/p/d", FAR[0], emb=unit(1, 0.05)), FileRecord(FileKey("/p/bad", 1, 9, 1, 1), skip=SkipReason.DECODE_ERROR),
    ]  # fmt: skip
    with Catalog.open(tmp_path, WITH_CNN, **CNN_STORE) as catalog:  # type: ignore[arg-type]
        catalog.apply(records)
        catalog.ignore(["/p/a", "/p/d"])
        assert shown(catalog) == oracle_groups(catalog, RULE) == {frozenset({"/p/a", "/p/b"})}  # d: ignored with a
        before = catalog.groups()
        for settings, how in (
            (RULE, None),  # unchanged: nothing to do
            (RULE.with_min_similarity(0.999), "judging the stored links again"),  # stricter: b-d goes
            (RULE.with_threshold(10), "searching all 4 records again"),  # looser
            (RULE.without_cnn().with_threshold(4), "searching all"),  # the CNN off
            (RULE, "searching all"),  # and on again
        ):
            caplog.clear()
            catalog.set_matcher(settings)
            assert shown(catalog) == oracle_groups(catalog, settings), settings
            assert catalog.matcher == settings
            assert [r.message for r in caplog.records if how and how in r.message] or not how and not caplog.records
        assert catalog.groups() == before
    with Catalog.open(tmp_path, IndexConfig(RULE.with_threshold(10)), **CNN_STORE) as catalog:  # type: ignore[arg-type]
        assert shown(catalog) == oracle_groups(catalog, RULE.with_threshold(10))
        assert catalog.stats()["records"] == {"encoded": 4, "skipped:decode_error": 1}
    with Catalog.open(tmp_path, HASH_ONLY) as catalog, pytest.raises(StoreError, match="CNN"):
        catalog.set_matcher(RULE)  # no CNN model: refused
    with Catalog.open(tmp_path, HASH_ONLY) as catalog:
        assert shown(catalog) == oracle_groups(catalog, HASH_ONLY.matcher)


def _random_encoding(rng: random.Random, nprng: np.random.Generator, stored: list[int]) -> tuple[int, np.ndarray]:
    """A dct hash with few bits in play (or a rotation of a stored one) and an embedding near one of 5
    centres (similarities straddle both CNN thresholds)."""
    dct = variant(rng.choice(stored), rng.randint(1, 7)) if stored and rng.random() < 0.2 else rng.getrandbits(9)
    centres = np.eye(DIM)[:5] + 0.3
    emb = centres[rng.randrange(5)] + nprng.normal(0, 0.25, DIM)
    return dct, emb / np.linalg.norm(emb)


@pytest.mark.parametrize("config", [HASH_ONLY, WITH_CNN], ids=["hash_only", "cnn"])
def test_random_batches_against_the_oracle(tmp_path: Path, config: IndexConfig) -> None:
    rng, nprng = random.Random(11), np.random.default_rng(11)
    names = [f"/r/{d}/{i}" for d in "abc" for i in range(12)]
    store_args = CNN_STORE if config.matcher.cnn_enabled else {}
    with Catalog.open(tmp_path, config, **store_args) as catalog:  # type: ignore[arg-type]
        dcts: list[int] = []
        contents: dict[int, tuple[int, np.ndarray]] = {}
        for step in range(40):
            batch: list[Change] = []
            for _ in range(rng.randint(1, 6)):
                roll = rng.random()
                if roll < 0.6:
                    digest = rng.randint(0, 40)
                    if digest not in contents:  # one content digest, one encoding: byte copies encode alike
                        contents[digest] = _random_encoding(rng, nprng, dcts)
                    dct, emb = contents[digest]
                    dcts.append(dct)
                    emb_or_none = emb if config.matcher.cnn_enabled else None
                    batch.append(rec(rng.choice(names), dct, digest=digest, emb=emb_or_none))
                elif roll < 0.8:
                    batch.append(Removal(rng.choice(names)))
                else:
                    batch.append(Move(rng.choice(names), rng.choice(names)))
            before = set(zip(*(column.tolist() for column in catalog.store.links()[:2]), strict=True))
            applied = catalog.apply(batch)
            new = set(zip(*(column.tolist() for column in catalog.store.links()[:2]), strict=True)) - before
            added = set(catalog.store.paths(b for _, b in new).values()) & {c.key.path for c in batch
                                                                             if isinstance(c, FileRecord)}
            new = {(a, b) for a, b in new if catalog.store.paths([b]).get(b) in added}  # a class's new star: no news
            assert sum(len(ms) for ms in applied.matches.values()) == len(new)  # one report per new link...
            assert set(applied.matches) == added  # ...by the newer, an arriving file
            if step % 10 == 5:
                grouped = sorted(p for g in shown(catalog) for p in g)
                if len(grouped) >= 2:
                    catalog.ignore(rng.sample(grouped, 2))
            assert shown(catalog) == oracle_groups(catalog, config.matcher), step
        assert catalog.store.check() == []
        final = shown(catalog)
    with Catalog.open(tmp_path, config, **store_args) as catalog:  # type: ignore[arg-type]
        assert shown(catalog) == final


def test_a_failed_commit_changes_neither_store_nor_index(tmp_path: Path) -> None:
    with Catalog.open(tmp_path, HASH_ONLY) as catalog:
        catalog.apply([rec("/p/a", 0)])
        broken = FileRecord(FileKey("/p/bad", 1, 2, 3, 4), rec("/p/x", 1).encoding, SkipReason.TRUNCATED)
        with pytest.raises(StoreError):
            catalog.apply([rec("/p/b", 1), broken])  # b would match a, but the batch cannot commit
        assert catalog.store.get("/p/b") is None and catalog.matches("/p/a") == []
        assert shown(catalog) == set() and catalog.stats()["index"] == {"dct": 1}


def test_encodings_without_the_oriented_hash_are_refused(tmp_path: Path) -> None:
    old = FileRecord(FileKey("/p/old", 1, 1, 1, 1), Encoding(b"\0" * 16, 1, 1, {"phash": 5}))
    with Catalog.open(tmp_path / "new", HASH_ONLY) as catalog, pytest.raises(StoreError, match="'dct'"):
        catalog.apply([old])
    with Store.open(tmp_path / "old") as store:
        store.commit([old])
    with pytest.raises(StoreVersionMismatch, match="older encoder"):
        Catalog.open(tmp_path / "old", HASH_ONLY)


def test_the_live_index_computes_a_stored_thumbnails_keypoints_once(tmp_path: Path) -> None:
    """The daemon commits an import in batches of one or two files: the live index keeps one keypoint cache
    (`search.verify.KeypointCache`) across its batches, so a stored file's keypoints are computed once, not
    again for every later copy of it. Real photographs: a photo, its re-encodes and its mirror image, one a batch."""
    photo = Image.open(Path(skimage.__file__).parent / "data" / "chelsea.png").convert("RGB")
    images = [photo, photo, photo, photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    files = []
    for k, (image, quality) in enumerate(zip(images, (95, 80, 65, 90), strict=True)):
        out = io.BytesIO()
        image.save(out, "JPEG", quality=quality)
        files.append(FileRecord(FileKey(f"/p/{k}.jpg", 1, k + 1, len(out.getvalue()), 0),
                                encode_bytes(out.getvalue()).encoding))  # fmt: skip
    with Catalog.open(tmp_path, IndexConfig(MatcherSettings().without_cnn())) as catalog:
        for record in files:
            catalog.apply([record])
        cache = catalog._index._keypoints
        groups = catalog.groups()
        assert [len(g.paths) for g in groups] == [len(files)]  # every copy verified into one duplicate group
        assert len(files) <= cache.computed <= 2 * len(files)  # each thumbnail and at most its mirror image
        assert len(cache) == cache.computed  # none computed twice


def _captured(path: str, dct: int, capture: Capture) -> FileRecord:
    record = rec(path, dct, digest=abs(hash(path)) % 2**32)
    assert record.encoding is not None
    return FileRecord(record.key, replace(record.encoding, capture=capture))


def test_groups_kept_across_added_batches_equal_a_fresh_grouping(tmp_path: Path) -> None:
    """After batches that only add files, the groups (each batch regroups only the components its links
    touch) are those a catalog opened on the same store computes from every link; capture sets (a RAW and
    its JPEG, one node even when they arrive apart and match different files) and capture identities that
    keep groups apart are in play."""
    rng = random.Random(5)
    with Catalog.open(tmp_path, HASH_ONLY) as catalog:
        # the deterministic case first: a RAW matches x, later its JPEG matches y (another component)
        catalog.apply([rec("/lib/x.jpg", 0b1), _captured("/card/IMG_1.CR2", 0b1, Capture("CR2"))])
        assert shown(catalog) == {frozenset({"/lib/x.jpg", "/card/IMG_1.CR2"})}
        catalog.apply([rec("/lib/y.jpg", 0b110000), _captured("/card/IMG_1.JPG", 0b110000, Capture("JPEG"))])
        expected = {frozenset({"/lib/x.jpg", "/lib/y.jpg", "/card/IMG_1.CR2", "/card/IMG_1.JPG"})}
        assert shown(catalog) == expected == {frozenset(g.paths) for g in Catalog(catalog.store, HASH_ONLY).groups()}
        times = [None, "2024:01:01 10:00:00", "2024:01:01 10:00:01"]
        used: set[str] = set()  # a path added again would replace its record: a removal, a full regrouping
        for step in range(30):
            batch: list[Change] = []
            for _ in range(rng.randint(1, 8)):
                kind = rng.choice(["CR2", "JPEG"])
                path = f"/r/{rng.choice('abcd')}/IMG_{rng.randrange(40)}.{'CR2' if kind == 'CR2' else 'JPG'}"
                if path not in used:
                    used.add(path)
                    batch.append(_captured(path, rng.getrandbits(12), Capture(kind, rng.choice(times), serial="s1")))
            catalog.apply(batch)
            fresh = {frozenset(g.paths) for g in Catalog(catalog.store, HASH_ONLY).groups()}
            assert shown(catalog) == fresh, step
        assert len(fresh) > 5
