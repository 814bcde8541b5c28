"""Keeps the store and the live index in step: durable before visible, under one lock.

Duplicates are decided by `dedupd.search.matcher.decide`, the rule `dedupd scan` uses: equal content
digests ("exact", distance 0); else the orientation-aware distance of the "dct" sign hashes (the smallest
over the 8 rotations and mirrors of either file) within `hash_threshold` with the CNN similarity at least
`hash_confirm_similarity` ("phash", score = distance); else the CNN similarity alone at least
`cnn_min_similarity` ("cnn", score = similarity). Without the CNN, or for a pair where either file has no
embedding, only "exact" and a distance within `hash_only_threshold` remain.

The live index finds the candidate pairs the rule can accept; it is rebuilt from the store at open and
then follows every committed batch:
- a MultiIndexHash over the "dct" hash, queried with each of a file's 8 dihedral variants (exact Hamming
  range queries; faster than a BK-tree at these thresholds, see BENCHMARKS.md "Index and store"),
- the embedding search, when the CNN is on (`search.embeddings`: the exact scan of the float16 matrix
  for a small library; from 50k embeddings an ANN index saved beside the store as ANN_FILE and rebuilt
  in the background when stale, the candidates it proposes judged on the rows read from the store),
- exact duplicates through the store's digest map (LMDB, not duplicated in memory); records with one digest
  are one class, linked as a star to its smallest rid (its representative) and searched through it only,
  so a flood of byte copies costs links and reports linear in its size (see `_batch_links`),
- duplicate groups: connected components of the stored links.
Every candidate pair is then judged on its whole evidence: the oriented distance and the dot product of
the two embeddings as stored (float16), so a pair gets the same decision whichever file came first,
whether both arrived in one batch, and after a relink.

`apply(changes)` finds the links of the new records against the index as it was before the batch and
among the batch itself, commits records and links in one store transaction (so groups rebuild at open
without searching again), and only then updates the index. One link per duplicate pair, with the method
and score that decided it. The store remembers the rule its links were computed with; a different rule at
open or through `set_matcher` relinks: when the new rule is stricter in every threshold only the stored
links are judged again (fast), otherwise every record is searched again (slow: one index search per
record, minutes at 1M records, longer with the CNN; the lock is held meanwhile).

`ignore(paths)` records that those files are not duplicates of each other: the pairs are stored by record
id (a move keeps them, a changed file drops them, a file re-encoded with the same content keeps them),
their links are deleted and they are never linked again. Groups are unions, so two ignored files still
share a group when a third file matches both.

Keep policy of `to_remove` (deterministic, documented for users): in each group keep the file with the
most pixels, then the largest file, then the oldest mtime, then the smallest path. Files under a protected
root are never proposed; when a group has some, they are its keepers and every other member is proposed.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import asdict, dataclass
from functools import cached_property

import numpy as np

from dedupd.errors import StoreError, StoreVersionMismatch
from dedupd.imaging.encode import ORIENTED_HASH
from dedupd.imaging.hashing import oriented_variants
from dedupd.memory import release_free_memory
from dedupd.pathnames import is_under
from dedupd.records import Commit, Encoding, FileRecord, Link, Match, StoreChange
from dedupd.search.ann import AnnIndex
from dedupd.search.embeddings import ANN_MIN_ROWS, EmbeddingSearch
from dedupd.search.groups import components, grouped, partition
from dedupd.search.keep import Candidate, choose
from dedupd.search.keep import keepers as keep_whole  # `keepers` names a plan's kept paths below
from dedupd.search.matcher import (
    DUPLICATE,
    PAIR_CHUNK_CELLS,
    SIMILAR,
    MatcherSettings,
    Side,
    decide,
    different_captures,
    evidence_of,
    evidence_rank,
    identity,
    oriented_distances,
    tiers,
)
from dedupd.search.mih import MultiIndexHash
from dedupd.search.sets import capture_sets
from dedupd.search.verify import KEYPOINT_BUDGET, KeypointCache
from dedupd.store import DEFAULT_MAP_SIZE, Store

log = logging.getLogger(__name__)

EXACT, PHASH, CNN = "exact", "phash", "cnn"
_DECISIONS = (EXACT, PHASH, CNN)  # decision code k + 1 (0: not duplicates)
#: imagededup-style hashes every encoding stores (reduced-decode approximations), searchable with `near`.
IMAGEDEDUP_HASHES = ("phash", "ahash", "dhash", "whash")
#: `near`'s default distance for them: imagededup's default `max_distance_threshold`.
IMAGEDEDUP_THRESHOLD = 10
NEAR_METHODS = (EXACT, *IMAGEDEDUP_HASHES, ORIENTED_HASH, CNN)
#: Embedding candidates are searched this far below the threshold, then judged on exact dot products:
#: the float16 search kernel rounds differently, and must not lose a pair the rule accepts.
_SEARCH_MARGIN = 0.01
_PAIR_BLOCK = 8192  # pairs judged at once: bounds the gathered embedding rows (2 x 8 MiB at 512-d)
_RELINK_BLOCK = 4096  # records searched at once by a relink
#: A similar-tier link is stored with this prefix before the rule's method ("similar:cnn"): the pair is a
#: different capture of one scene; it never joins a duplicate group and keeps its two files apart.
SIMILAR_PREFIX = "similar:"
#: The saved ANN index of the embeddings, in the state directory beside the store (`search.embeddings`).
ANN_FILE = "embeddings.ann"
#: The index file of builds before the sign codes (a usearch graph): deleted at open.
LEGACY_ANN_FILE = "embeddings.usearch"

type _RawLink = tuple[int, int, str, float]  # rid a, rid b, method, score
type _Ranked = tuple[int, str, int, "KeepPlan | None"]  # bytes to free, first file shown, group index, plan
type _Keep = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (query positions, rids) -> which candidates to judge


@dataclass(frozen=True, slots=True)
class IndexConfig:
    """What the live index links: the fused duplicate rule (exact digests are always linked)."""

    matcher: MatcherSettings = MatcherSettings()


@dataclass(frozen=True, slots=True)
class Group:
    """A duplicate group: member paths (sorted) and the matches that join them."""

    paths: tuple[str, ...]
    links: tuple[tuple[str, Match], ...]


@dataclass(frozen=True, slots=True)
class KeepPlan:
    """What `to-remove` proposes for one duplicate group: keep these (why), these could go."""

    keep: tuple[str, ...]
    why: str
    remove: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RankedGroup:
    """A group of a page ranked by space to free (the review page's order): the group, the keep policy's
    plan for it (duplicates only; None for similar groups) and the bytes deleting its extra files frees: the
    plan's removals, or, without one, every member but the largest."""

    group: Group
    plan: KeepPlan | None
    free_bytes: int


@dataclass(frozen=True, slots=True)
class GroupPage:
    """`limit` groups from `offset` of a tier ranked by space to free, with the totals of the whole tier."""

    groups: tuple[RankedGroup, ...]
    total: int
    free_bytes: int


@dataclass(frozen=True, slots=True)
class Applied:
    """A committed batch: its sequence number and, per newly added path that duplicates an older file,
    what it matched. Each duplicate pair appears once, under its newer file (for a pair inside the batch,
    the later one in batch order), so one arriving duplicate is one report."""

    seq: int
    matches: Mapping[str, list[Match]]


@dataclass(frozen=True)
class _Files:
    """The evidence of some files, one row each: what judging a pair needs from either side."""

    hashes: np.ndarray  # (n,) uint64 "dct" sign hash of the file as stored
    rows: np.ndarray | None  # (n, dim) float16 embeddings, zero rows where `has_row` is False; None: CNN off
    has_row: np.ndarray  # (n,) bool
    sides: Sequence[Side] | None = None  # capture identity and thumbnail per file; None: read from the store
    rids: np.ndarray | None = None  # the stored records these rows are (when `sides` is None)

    @cached_property
    def variants(self) -> np.ndarray:
        """(n, 8) uint64: the hash under each rotation and mirror (column 0 the file as is)."""
        return oriented_variants(self.hashes)


def link_rule(settings: MatcherSettings) -> dict[str, object]:
    """The thresholds links depend on, as the store keeps them beside the links (a store whose links
    were made by another rule is relinked at open): without the CNN only the hash-only one."""
    if not settings.cnn_enabled:
        return {"cnn_enabled": False, "hash_only_threshold": settings.hash_only_threshold}
    return asdict(settings)


def _within(new: MatcherSettings, old: MatcherSettings) -> bool:
    """Does every pair `new` accepts also pass `old`? Then relinking only judges the stored links again."""
    if new.cnn_enabled != old.cnn_enabled or new.hash_only_threshold > old.hash_only_threshold:
        return False
    return not new.cnn_enabled or (
        new.hash_threshold <= old.hash_threshold
        and new.hash_confirm_similarity >= old.hash_confirm_similarity
        and new.cnn_min_similarity >= old.cnn_min_similarity
    )


def _match(path: str, method: str, score: float) -> Match:
    tier = SIMILAR if method.startswith(SIMILAR_PREFIX) else DUPLICATE
    method = method.removeprefix(SIMILAR_PREFIX)
    if method == CNN:
        return Match(path, method, similarity=float(score), tier=tier)
    return Match(path, method, distance=int(score), tier=tier)


def _strength(m: Match) -> tuple[int, float, str]:
    """Best first (`matcher.evidence_rank`: exact, then smaller distance, then higher similarity); ties by path."""
    score = m.similarity if m.similarity is not None else float(m.distance or 0)
    return (*evidence_rank(m.method, score), m.path)


def _pair_key(a: int, b: int) -> tuple[int, int]:
    return (a, b) if a < b else (b, a)


class _LiveIndex:
    """One rule and the in-memory structures that find and judge its candidate pairs."""

    def __init__(
        self, settings: MatcherSettings, dct: MultiIndexHash, vectors: EmbeddingSearch | None, store: Store
    ) -> None:
        self.settings = settings
        self.dct = dct
        self.vectors = vectors if settings.cnn_enabled else None
        self._store = store
        # stored thumbnails' keypoints across commit batches: a stored file's are computed once, not again for
        # every later file of its group
        self._keypoints = KeypointCache(KEYPOINT_BUDGET)

    @property
    def hash_threshold(self) -> int:
        """The largest oriented distance the rule can accept (the hash-only one covers files without embeddings)."""
        s = self.settings
        return max(s.hash_threshold, s.hash_only_threshold) if self.vectors is not None else s.hash_only_threshold

    # ------------------------------------------------------------------ evidence
    def files(self, encodings: Sequence[Encoding]) -> _Files:
        """Evidence of encodings as they would be stored (embeddings rounded to float16)."""
        hashes = np.array([enc.hashes[ORIENTED_HASH] for enc in encodings], np.uint64)
        has = np.array([enc.embedding is not None for enc in encodings], bool)
        sides = [(enc.capture, enc.thumb) for enc in encodings]
        if self.vectors is None:
            return _Files(hashes, None, has, sides)
        rows = np.zeros((len(encodings), self.vectors.dim), np.float16)
        for i, enc in enumerate(encodings):
            if enc.embedding is not None:
                rows[i] = np.asarray(enc.embedding, np.float16).ravel()
        return _Files(hashes, rows, has, sides)

    def stored(self, rids: np.ndarray) -> _Files:
        """Evidence of stored records, from the live index (capture and thumbnail from the store when needed)."""
        hashes = self.dct.values_of(rids)
        if self.vectors is None:
            return _Files(hashes, None, np.zeros(len(rids), bool), rids=rids)
        rows, has = self.vectors.rows_of(rids)
        return _Files(hashes, rows, has, rids=rids)

    def sides(self, files: _Files, positions: np.ndarray) -> list[Side]:
        """Capture identity and thumbnail of some rows of `files`."""
        if files.sides is not None:
            return [files.sides[k] for k in positions.tolist()]
        assert files.rids is not None
        wanted = files.rids[positions].tolist()
        records = self._store.records(set(wanted))
        encodings = {rid: rec.encoding for rid, rec in records.items()}
        return [(e.capture, e.thumb) if (e := encodings.get(rid)) is not None else (None, None) for rid in wanted]

    def judge(
        self, a: _Files, b: _Files, ia: np.ndarray, ib: np.ndarray, exact: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The rule on pairs (a[ia[k]], b[ib[k]]): decision codes (0: not duplicates, c: _DECISIONS[c - 1]),
        oriented distances, similarities (NaN where a file has no embedding or the CNN is off)."""
        variants = a.variants
        distances = np.zeros(len(ia), np.int64)
        similarities = np.full(len(ia), np.nan)
        for first in range(0, len(ia), _PAIR_BLOCK):
            x, y = ia[first : first + _PAIR_BLOCK], ib[first : first + _PAIR_BLOCK]
            distances[first : first + len(x)] = np.bitwise_count(variants[x] ^ b.hashes[y][:, None]).min(axis=1)
            if a.rows is not None and b.rows is not None:
                # float16 products are exact in float32, summed in float64: the same value in every path
                dots = (a.rows[x].astype(np.float32) * b.rows[y].astype(np.float32)).sum(axis=1, dtype=np.float64)
                similarities[first : first + len(x)] = np.where(a.has_row[x] & b.has_row[y], dots, np.nan)
        codes = np.zeros(len(ia), np.int8)
        with_cnn = ~np.isnan(similarities)
        for mask, sims in ((with_cnn, similarities), (~with_cnn, None)):
            verdicts = decide(exact[mask], distances[mask], None if sims is None else sims[mask], self.settings)
            codes[mask] = np.select(verdicts, [1, 2, 3], 0)
        return codes, distances, similarities

    # ------------------------------------------------------------------ candidates
    def candidates(self, files: _Files, exact: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(query positions, rids, is exact) of every live record the rule could accept for each file.

        `exact[i]` lists the records with the same digest as file i (the digest map is not in memory)."""
        positions = [np.repeat(np.arange(len(exact)), [len(r) for r in exact])]
        rids = [np.fromiter(itertools.chain.from_iterable(exact), np.int64)]
        flags = [np.ones(len(rids[0]), bool)]
        owners, keys, _ = self.dct.query_many(files.variants.ravel(), self.hash_threshold)
        positions.append(owners // 8)
        rids.append(keys)
        if self.vectors is not None and files.rows is not None and files.has_row.any():
            have = np.flatnonzero(files.has_row)
            found = self.vectors.search_many(files.rows[have], self.settings.cnn_min_similarity - _SEARCH_MARGIN)
            positions += [np.full(len(k), i) for i, k in zip(have.tolist(), found, strict=True)]
            rids += found
        flags += [np.zeros(sum(len(p) for p in positions[1:]), bool)]
        pos, rid, flag = np.concatenate(positions), np.concatenate(rids), np.concatenate(flags)
        order = np.lexsort((~flag, rid, pos))  # per pair, an exact sighting first
        pos, rid, flag = pos[order], rid[order], flag[order]
        first = np.ones(len(pos), bool)
        first[1:] = (pos[1:] != pos[:-1]) | (rid[1:] != rid[:-1])
        return pos[first], rid[first], flag[first]

    def among(self, files: _Files, digests: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(later, earlier, is exact) positions of every pair among `files` the rule could accept."""
        ids = {d: i for i, d in enumerate(digests)}
        digest_ids = np.array([ids[d] for d in digests], np.int64)
        variants, count = files.variants, len(digests)
        rows = files.rows.astype(np.float32) if files.rows is not None else None
        found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        step = max(1, PAIR_CHUNK_CELLS // max(count, 1))
        for start in range(0, count, step):
            stop = min(count, start + step)
            same = digest_ids[start:stop, None] == digest_ids[None, :]
            near = same | (oriented_distances(variants[start:stop], files.hashes) <= self.hash_threshold)
            if rows is not None:
                sims = rows[start:stop] @ rows.T >= self.settings.cnn_min_similarity - _SEARCH_MARGIN
                near |= sims & files.has_row[start:stop, None] & files.has_row[None, :]
            near &= np.arange(count)[None, :] < np.arange(start, stop)[:, None]
            later, earlier = np.nonzero(near)
            found.append((later + start, earlier, same[later, earlier]))
        later, earlier, same = (np.concatenate(column) for column in zip(*found, strict=True))
        return later, earlier, same

    # ------------------------------------------------------------------ links
    def links(
        self, rids: np.ndarray, a: _Files, b: _Files, ia: np.ndarray, ib: np.ndarray, others: np.ndarray,
        exact: np.ndarray,
    ) -> list[Link]:  # fmt: skip
        """Links of the pairs (rids[ia[k]], others[k]) the rule accepts, judged as (a[ia], b[ib]), each with
        its tier: a similar pair's method is SIMILAR_PREFIX + the rule's method."""
        codes, distances, similarities = self.judge(a, b, ia, ib, exact)
        accepted = np.flatnonzero(codes)
        methods = [_DECISIONS[codes[k] - 1] for k in accepted.tolist()]
        decided = tiers(methods, self.sides(a, ia[accepted]), self.sides(b, ib[accepted]), self._keypoints)
        links = []
        for k, method, (tier_, _) in zip(accepted.tolist(), methods, decided, strict=True):
            score = similarities[k] if method == CNN else distances[k]
            name = method if tier_ == DUPLICATE else SIMILAR_PREFIX + method
            links.append(Link(int(rids[ia[k]]), int(others[k]), name, float(score)))
        return links

    def against_index(self, rids: np.ndarray, files: _Files, exact: Sequence[Sequence[int]], keep: _Keep) -> list[Link]:
        """Links of the files (stored or about to be, as `rids`) to live records; `keep` chooses the
        candidates worth judging."""
        pos, others, is_exact = self.candidates(files, exact)
        chosen = keep(pos, others)
        pos, others, is_exact = pos[chosen], others[chosen], is_exact[chosen]
        unique, ib = np.unique(others, return_inverse=True)
        return self.links(rids, files, self.stored(unique), pos, ib, others, is_exact)

    def relink(self, ignored: set[tuple[int, int]], classes: list[list[int]], copies: set[int]) -> list[Link]:
        """Every link among the live records, searching the index once per record that is not a byte copy
        (slow). `classes`: the records sharing a digest (`Store.exact_groups`), linked by `_class_pairs`."""
        links = [Link(a, b, EXACT, 0.0) for rids in classes for a, b in sorted(_class_pairs(rids, copies))]
        excluded = np.array(sorted(copies), np.int64)
        all_rids, _ = self.dct.items()
        searchers = all_rids[~np.isin(all_rids, excluded)]
        for first in range(0, len(searchers), _RELINK_BLOCK):
            rids = searchers[first : first + _RELINK_BLOCK]

            def keep(pos: np.ndarray, others: np.ndarray, rids: np.ndarray = rids) -> np.ndarray:
                return (others > rids[pos]) & ~np.isin(others, excluded)

            links += self.against_index(rids, self.stored(rids), [[] for _ in range(len(rids))], keep)
        return _unique(links, ignored)

    def rejudge(self, store_links: tuple[np.ndarray, np.ndarray, list[str], np.ndarray, np.ndarray]) -> list[Link]:
        """The stored links that a stricter rule still accepts, with its method and score."""
        a, b, methods, codes, _ = store_links
        exact = codes == (methods.index(EXACT) if EXACT in methods else -1)
        links: list[Link] = []
        for first in range(0, len(a), _PAIR_BLOCK):
            block = slice(first, first + _PAIR_BLOCK)
            each = np.arange(len(a[block]))
            links += self.links(a[block], self.stored(a[block]), self.stored(b[block]), each, each, b[block],
                                exact[block])  # fmt: skip
        return links


class Catalog:
    """The store plus its live index; all operations are serialised by one lock."""

    def __init__(self, store: Store, config: IndexConfig, *, ann_min_rows: int = ANN_MIN_ROWS) -> None:
        self._store = store
        self._ann_min_rows = ann_min_rows
        self._lock = threading.RLock()
        self._columns: dict[str, MultiIndexHash] = {}  # imagededup-style hashes, loaded by the first `near`
        self._ignored: set[tuple[int, int]] = set()
        self._copies: set[int] = set()  # byte copies: records whose digest a smaller rid also has
        self._groups: list[list[int]] | None = None  # duplicate groups, computed on demand from the links
        self._stale: set[int] = set()  # ends of the links added since _groups was computed
        #: group_page's ranking of a tier's groups (by its arguments), until the next commit or regrouping.
        self._ranked: dict[tuple[object, ...], tuple[list[tuple[list[int], list[_RawLink]]], list[_Ranked]]] = {}
        self._check_cnn(config.matcher)
        self._index = self._rebuild(config.matcher)

    @classmethod
    def open(
        cls,
        state_dir: str | os.PathLike[str],
        config: IndexConfig,
        *,
        encoder_version: str | None = None,
        model_id: str | None = None,
        dim: int | None = None,
        map_size: int = DEFAULT_MAP_SIZE,
        ann_min_rows: int = ANN_MIN_ROWS,
    ) -> Catalog:
        """Open the store (refusing another encoder's or model's records) and rebuild the index."""
        store = Store.open(state_dir, map_size=map_size, encoder_version=encoder_version, model_id=model_id, dim=dim)
        try:
            return cls(store, config, ann_min_rows=ann_min_rows)
        except BaseException:
            store.close()
            raise

    def close(self) -> None:
        with self._lock:
            if self._index.vectors is not None:
                self._index.vectors.close()  # saves the ANN index, stamped with the store's state
            self._store.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def store(self) -> Store:
        return self._store

    @property
    def matcher(self) -> MatcherSettings:
        return self._index.settings

    def _check_cnn(self, settings: MatcherSettings) -> None:
        if settings.cnn_enabled and not self._store.dim:
            raise StoreError("the duplicate rule uses the CNN but the store was opened without a CNN model")

    # ------------------------------------------------------------------ rebuild and relink
    def _rebuild(self, settings: MatcherSettings) -> _LiveIndex:
        """Load the index from the store; relink when the stored links were made by another rule."""
        rids, hashes = self._store.hash_column(ORIENTED_HASH)
        encoded = self._store.counts().get("encoded", 0)
        if len(rids) != encoded:
            raise StoreVersionMismatch(
                f"{encoded - len(rids)} of {encoded} stored encodings have no {ORIENTED_HASH!r} hash: they were "
                "written by an older encoder; move the state directory away to re-encode"
            )
        vectors = self._open_vectors() if settings.cnn_enabled else None
        index = _LiveIndex(settings, MultiIndexHash.from_arrays(rids, hashes), vectors, self._store)
        self._ignored = set(self._store.ignored())
        self._copies = _copies_of(self._store.exact_groups()) - {r for pair in self._ignored for r in pair}
        self._relink(index)
        self._regroup()
        release_free_memory()
        return index

    def _open_vectors(self) -> EmbeddingSearch:
        """The embedding search: the saved ANN index beside the store when it matches, else the exact scan
        (and an ANN build in the background for a large library)."""
        state = self._store.state_dir
        path = None if state is None else state / ANN_FILE
        if state is not None:
            AnnIndex.discard(state / LEGACY_ANN_FILE)
        return EmbeddingSearch.open(self._store.dim or 0, self._store, path, self._ann_min_rows)

    def _relink(self, index: _LiveIndex) -> bool:
        """Make the stored links those of `index`'s rule; False when they already were."""
        rule, stored = link_rule(index.settings), self._store.link_rule()
        if rule == stored:
            return False
        if stored is not None and _within(index.settings, MatcherSettings(**stored)):
            log.info("duplicate rule is stricter (%s -> %s): judging the stored links again", stored, rule)
            links = index.rejudge(self._store.links())
        else:
            if len(index.dct):
                log.warning("duplicate rule changed (%s -> %s): searching all %d records again",
                            stored, rule, len(index.dct))  # fmt: skip
            links = self._distinct_files(index.relink(self._ignored, self._store.exact_groups(), self._copies))
        self._store.replace_links(links, rule)
        return True

    def _regroup(self) -> None:
        self._groups = None
        self._stale.clear()
        self._ranked.clear()

    def _partition(self, only: str | None = None, tier: str = DUPLICATE) -> list[list[int]]:
        """Groups of one tier from the stored links (`search.groups.partition`, the scan's grouping):
        duplicate links strongest first (ties by path), similar links keeping their files apart; with
        `only`, that method's links alone. Similar groups are plain unions of similar links.

        The duplicate groups are kept between batches: after a batch that only added links, only the
        components its links touch (`_region`) are grouped again, the other groups stay as they were."""
        cached = only is None and tier == DUPLICATE
        if cached and self._groups is not None and not self._stale:
            return self._groups
        a, b, methods, codes, scores = self._store.links()
        similar = np.array([m.startswith(SIMILAR_PREFIX) for m in methods] + [False], bool)[codes]
        chosen = similar if tier == SIMILAR else ~similar
        if only is not None:
            chosen &= codes == (methods.index(only) if only in methods else -1)
        kept: list[list[int]] = []
        if cached and self._groups is not None:
            region = self._region(a[chosen], b[chosen])
            kept = [g for g in self._groups if g[0] not in region]
            inside = np.isin(a, np.fromiter(region, np.int64, len(region)))
            chosen &= inside
            similar &= inside
        rows = np.flatnonzero(chosen)
        paths = self._store.paths({int(r) for r in np.concatenate([a[rows], b[rows]]).tolist()})

        def strength(k: int) -> tuple[tuple[int, float], str, str]:
            x, y = paths.get(int(a[k]), ""), paths.get(int(b[k]), "")
            return evidence_rank(methods[codes[k]].removeprefix(SIMILAR_PREFIX), float(scores[k])), min(x, y), max(x, y)

        order = sorted(rows.tolist(), key=strength)
        if tier == DUPLICATE:  # similar pairs and the pairs the user ignored are never in one duplicate group
            cannot = list(zip(a[similar].tolist(), b[similar].tolist(), strict=True)) + sorted(self._ignored)
            records = self._store.records({int(r) for r in np.concatenate([a[rows], b[rows]]).tolist()})
            ids = {rid: identity(rec.encoding.capture) for rid, rec in records.items() if rec.encoding is not None}
            groups = partition(((int(a[k]), int(b[k])) for k in order), cannot, ids, different_captures,
                               sets_of(records))
        else:
            groups = partition((int(a[k]), int(b[k])) for k in order)
        if cached:
            groups = sorted(kept + groups, key=lambda group: group[0]) if kept else groups
            self._groups = groups
            self._stale.clear()
        return groups

    def _region(self, a: np.ndarray, b: np.ndarray) -> set[int]:
        """The records whose groups the links added since the last grouping may have changed: the stale
        records (those links' ends), their connected components in the duplicate links `a`-`b`, and every
        linked record in the folder of one of them (a capture set, which `partition` joins as one node,
        is files of one folder: `search.sets`) with its component, until nothing is added. No group
        crosses its edge, so grouping the links inside it alone gives its groups."""
        nodes, labels = components(a, b)
        linked = set(nodes.tolist())
        region, placed, folders = set(self._stale), set[int](), set[str]()
        while True:
            hit = np.isin(nodes, np.fromiter(region, np.int64, len(region)))
            region.update(nodes[np.isin(labels, labels[hit])].tolist())
            new = {os.path.dirname(path) for path in self._store.paths(region - placed).values()} - folders
            placed |= region
            if not new:
                return region
            folders |= new
            region.update(rid for folder in new for rid, path in self._store.rids_under(folder).items()
                          if rid in linked and os.path.dirname(path) == folder)  # fmt: skip

    def set_matcher(self, settings: MatcherSettings) -> None:
        """Switch to a new rule (a reload): links and groups follow it; nothing changes if it is refused."""
        with self._lock:
            self._check_cnn(settings)
            current = self._index
            if settings.cnn_enabled and current.vectors is None:
                vectors: EmbeddingSearch | None = self._open_vectors()
            else:
                vectors = current.vectors if settings.cnn_enabled else None
            index = _LiveIndex(settings, current.dct, vectors, self._store)
            if self._relink(index):
                self._regroup()
            self._index = index

    # ------------------------------------------------------------------ updates
    def apply(self, changes: Sequence[StoreChange]) -> Applied:
        """Commit `changes` with their links (one transaction), then update the live index."""
        with self._lock:
            for change in changes:
                if isinstance(change, FileRecord) and change.encoding and ORIENTED_HASH not in change.encoding.hashes:
                    raise StoreError(f"encoding of {change.key.path} has no {ORIENTED_HASH!r} hash (an older encoder)")
            found: list[Link] = []
            copies: set[int] = set()

            def find(commit: Commit) -> list[Link]:  # may run twice (a map resize): no side effects
                links, after = self._batch_links(commit)
                found[:] = links
                copies.clear()
                copies.update(after)
                return found

            commit = self._store.commit(changes, link=find)
            self._ranked.clear()  # sizes, mtimes and capture data rank groups and choose keepers, links or not
            self._copies = copies
            self._follow(commit, found)
            if self._index.vectors is not None and self._index.vectors.checkpoint():
                release_free_memory()  # the exact matrix the ANN index replaced
            return Applied(commit.seq, self._matches_of_added(found, {rid for rid, _ in commit.added}))

    def _batch_links(self, commit: Commit) -> tuple[list[Link], set[int]]:
        """Links the batch adds, and the byte copies after it.

        Records with one content digest form one class. Its smallest rid is its representative; the others
        are copies (`_copies`), except "loners": records in an ignored pair, which keep links of their own.
        A class is linked by the pairs that hold a non-copy (`_class_pairs`: a star from the representative,
        plus the loners' links), and only non-copies are searched for near duplicates, so 2,000 copies of
        a file are 1,999 links, not 2 million. When a representative goes, the next smallest rid takes
        over: it is linked to the copies and searched like a new record."""
        removed = set(commit.removed)
        gone = self._store.records(commit.removed)  # the store as it was before this transaction
        new = [(rid, rec.encoding) for rid, rec in commit.added if rec.encoding is not None]
        touched = {rec.encoding.digest for rec in gone.values() if rec.encoding is not None}
        touched |= {enc.digest for _, enc in new}
        classes = {d: sorted(set(self._store.rids_for_digest(d)) - removed) for d in touched}
        for rid, enc in new:  # rids grow in batch order, above every stored one
            classes[enc.digest].append(rid)
        ignored = self._ignored | set(commit.ignored)
        loners = {r for pair in ignored for r in pair}
        members = {r for rs in classes.values() for r in rs}
        copies = (self._copies - removed - members) | (_copies_of(classes.values()) - loners)
        fresh = {rid for rid, _ in new}
        promoted = sorted(rs[0] for rs in classes.values() if rs and rs[0] in self._copies)
        changed = fresh | set(promoted)
        links = [Link(a, b, EXACT, 0.0) for rs in classes.values() for a, b in sorted(_class_pairs(rs, copies))
                 if a in changed or b in changed]  # fmt: skip
        index = self._index
        excluded = np.array(sorted(copies | removed), np.int64)
        if promoted:  # took over a class whose representative went: searched like a new record
            stored = np.array(promoted, np.int64)

            def keep_others(pos: np.ndarray, others: np.ndarray) -> np.ndarray:
                return ~np.isin(others, excluded) & (others != stored[pos])

            links += index.against_index(stored, index.stored(stored), [[] for _ in promoted], keep_others)
        searchers = [(rid, enc) for rid, enc in new if rid not in copies]
        if searchers:
            rids = np.array([rid for rid, _ in searchers], np.int64)
            files = index.files([enc for _, enc in searchers])

            def keep(pos: np.ndarray, others: np.ndarray) -> np.ndarray:
                return ~np.isin(others, excluded)

            links += index.against_index(rids, files, [[] for _ in searchers], keep)
            later, earlier, same = index.among(files, [enc.digest for _, enc in searchers])
            links += index.links(rids, files, files, later, earlier, rids[earlier], same)
        return self._distinct_files(_unique(links, ignored), dict(commit.added)), copies

    def _distinct_files(self, links: list[Link], known: Mapping[int, FileRecord] | None = None) -> list[Link]:
        """`links` without those joining two names of one file (a symlink followed to its target, hard
        links): deleting one of them would delete the only copy, so they are never duplicates."""
        if not links:
            return links
        records = dict(known or {})
        records |= self._store.records({r for ln in links for r in (ln.a, ln.b)} - records.keys())

        def inode(rid: int) -> tuple[int, int] | None:
            rec = records.get(rid)
            return None if rec is None else (rec.key.dev, rec.key.inode)

        return [ln for ln in links if inode(ln.a) is None or inode(ln.a) != inode(ln.b)]

    def _follow(self, commit: Commit, links: Sequence[Link]) -> None:
        """Make a committed batch visible in the index."""
        index = self._index
        for rid in commit.removed:
            for structure in (index.dct, index.vectors, *self._columns.values()):
                if structure is not None:
                    structure.delete(rid)
        if commit.removed:
            gone = set(commit.removed)
            self._ignored = {pair for pair in self._ignored if not gone.intersection(pair)}
        self._ignored.update(commit.ignored)
        encoded = [(rid, rec.encoding) for rid, rec in commit.added if rec.encoding is not None]
        if encoded:
            rids = [rid for rid, _ in encoded]
            index.dct.insert_many(rids, [enc.hashes[ORIENTED_HASH] for _, enc in encoded])
            for name, column in self._columns.items():
                have = [(rid, enc.hashes[name]) for rid, enc in encoded if name in enc.hashes]
                column.insert_many([rid for rid, _ in have], [value for _, value in have])
            with_rows = [(rid, enc.embedding) for rid, enc in encoded if enc.embedding is not None]
            if index.vectors is not None and with_rows:
                index.vectors.insert_many(np.array([r for r, _ in with_rows]), np.stack([e for _, e in with_rows]))
        if commit.removed or commit.ignored or commit.moved:
            self._regroup()
        elif links:  # only added: the groups of these records' components are computed again
            self._stale.update(r for ln in links for r in (ln.a, ln.b))

    def _matches_of_added(self, links: Sequence[Link], added: AbstractSet[int]) -> dict[str, list[Match]]:
        """Each link of an added record reported once, under its newer record (rids grow in batch order).
        Links among older records (a class whose representative went) are no news: not reported."""
        links = [ln for ln in links if max(ln.a, ln.b) in added]
        if not links:
            return {}
        paths = self._store.paths({r for ln in links for r in (ln.a, ln.b)})
        sets = sets_of(self._store.records({r for ln in links for r in (ln.a, ln.b)}))
        out: dict[str, list[Match]] = {}
        for ln in links:
            if ln.method.startswith(SIMILAR_PREFIX):  # reports speak of duplicates only
                continue
            if ln.a in sets and sets.get(ln.b) == sets[ln.a]:  # one capture set (a RAW and its JPEG): no news
                continue
            newer, older = max(ln.a, ln.b), min(ln.a, ln.b)
            out.setdefault(paths[newer], []).append(_match(paths[older], ln.method, ln.score))
        return {p: sorted(ms, key=_strength) for p, ms in out.items()}

    def ignore(self, paths: Sequence[str]) -> int:
        """The user says these files are not duplicates of each other: every pair among them loses its link
        and is never linked, grouped or reported again. Returns how many pairs were not ignored before."""
        with self._lock:
            rids = self._rids_of(paths)
            pairs = list(itertools.combinations(rids, 2))
            added = self._store.ignore(pairs)
            self._ignored.update(pairs)
            loners = sorted(set(rids) & self._copies)  # a byte copy now keeps links of its own
            if loners:
                self._copies -= set(loners)
                links = self._own_links(np.array(loners, np.int64))
                self._store.commit([], link=lambda _commit: links)
            self._regroup()
            return added

    def _rids_of(self, paths: Sequence[str]) -> list[int]:
        found = {path: self._store.lookup(path) for path in paths}
        unknown = sorted(path for path, hit in found.items() if hit is None)
        if unknown:
            raise StoreError(f"not in the index: {', '.join(unknown)}")
        return sorted({hit[0] for hit in found.values() if hit is not None})

    def unignore(self, paths: Sequence[str]) -> int:
        """Undo `ignore` among these files: their pairs are judged by the rule again (linked, grouped,
        reported in queries). Returns how many pairs were ignored."""
        with self._lock:
            rids = self._rids_of(paths)
            pairs = set(itertools.combinations(rids, 2))
            removed = self._store.unignore(pairs)
            self._ignored -= pairs
            links = self._own_links(np.array(rids, np.int64))
            if links:
                self._store.commit([], link=lambda _commit: links)
            self._regroup()
            return removed

    def ignored_pairs(self) -> list[tuple[str, str]]:
        """The pairs the user declared not duplicates, as sorted path pairs."""
        with self._lock:
            pairs = sorted(self._ignored)
            paths = self._store.paths({r for pair in pairs for r in pair})
            return sorted((min(paths[a], paths[b]), max(paths[a], paths[b])) for a, b in pairs
                          if a in paths and b in paths)  # fmt: skip

    def _own_links(self, rids: np.ndarray) -> list[Link]:
        """Links of stored records searched again, as a new record would be (a byte copy that became a loner
        was linked to its representative only; an unignored pair was not linked at all): to every other
        record of their digest class and to their near duplicates, minus ignored pairs."""
        loners = rids
        records = self._store.records(loners.tolist())
        links = [Link(rid, other, EXACT, 0.0) for rid, rec in records.items() if rec.encoding is not None
                 for other in self._store.rids_for_digest(rec.encoding.digest) if other != rid]  # fmt: skip
        excluded = np.array(sorted(self._copies), np.int64)

        def keep(pos: np.ndarray, others: np.ndarray) -> np.ndarray:
            return ~np.isin(others, excluded) & (others != loners[pos])

        index = self._index
        links += index.against_index(loners, index.stored(loners), [[] for _ in range(len(loners))], keep)
        return self._distinct_files(_unique(links, self._ignored))

    # ------------------------------------------------------------------ queries
    def _resolve(self, target: Encoding | str) -> tuple[int | None, Encoding]:
        """(own rid or None, encoding) of an encoding or of a stored path."""
        if not isinstance(target, str):
            return None, target
        found = self._store.lookup(target, embedding=True)
        if found is None or found[1].encoding is None:
            raise StoreError(f"{target} is not in the index")
        return found[0], found[1].encoding

    def matches(self, target: Encoding | str) -> list[Match]:
        """What the duplicate rule says about an encoding (stored or not) or a stored path: every stored
        file it duplicates, best first (exact, then smaller distance, then higher similarity). A stored
        path does not match itself nor the files ignored with it."""
        with self._lock:
            own, encoding = self._resolve(target)
            if ORIENTED_HASH not in encoding.hashes:
                raise StoreError(f"the encoding has no {ORIENTED_HASH!r} hash")
            index = self._index
            skip = [] if own is None else [own, *(b if a == own else a for a, b in self._ignored if own in (a, b))]

            def keep(pos: np.ndarray, others: np.ndarray) -> np.ndarray:
                return ~np.isin(others, skip)

            exact = [self._store.rids_for_digest(encoding.digest)]
            links = index.against_index(np.array([-1 if own is None else own]), index.files([encoding]), exact, keep)
            paths = self._store.paths(ln.b for ln in links)
            return sorted((_match(paths[ln.b], ln.method, ln.score) for ln in links if ln.b in paths), key=_strength)

    def near(
        self,
        target: Encoding | str,
        method: str,
        *,
        threshold: int | None = None,
        min_similarity: float | None = None,
    ) -> list[Match]:
        """Files near an encoding or a stored path by ONE kind of evidence, best first, without the rule.

        `method` is one of NEAR_METHODS:
        - "exact": same content digest (distance 0);
        - "phash", "ahash", "dhash", "whash": plain Hamming distance of the stored imagededup-style hash of
          that name (a scan of an in-memory column, loaded by the first such query: ~1 ms at 1M files),
          at most `threshold` (default IMAGEDEDUP_THRESHOLD, imagededup's);
        - "dct": the rule's orientation-aware sign-hash distance (smallest over rotations and mirrors) at
          most `threshold` (default: the rule's hash threshold), with no CNN confirmation;
        - "cnn": embedding similarity at least `min_similarity` (default the rule's `cnn_min_similarity`).
        Matches carry `method` as given. A stored path does not match itself; ignored pairs are not
        filtered out here (this is raw evidence; `matches` applies the rule).
        """
        with self._lock:
            own, encoding = self._resolve(target)
            index = self._index
            hits: dict[int, float]
            if method == EXACT:
                hits = dict.fromkeys(self._store.rids_for_digest(encoding.digest), 0.0)
            elif method == ORIENTED_HASH or method in IMAGEDEDUP_HASHES:
                if method not in encoding.hashes:
                    raise StoreError(f"the encoding has no {method} hash")
                if method == ORIENTED_HASH:
                    limit = index.hash_threshold if threshold is None else threshold
                    _, keys, dists = index.dct.query_many(index.files([encoding]).variants.ravel(), limit)
                else:
                    limit = IMAGEDEDUP_THRESHOLD if threshold is None else threshold
                    keys, dists = self._column(method).query(encoding.hashes[method], limit)
                hits = {}
                for key, dist in zip(keys.tolist(), dists.tolist(), strict=True):
                    hits[key] = min(hits.get(key, 64), dist)
            elif method == CNN:
                if index.vectors is None or encoding.embedding is None:
                    raise StoreError("a CNN search needs the CNN enabled and an embedding")
                minimum = index.settings.cnn_min_similarity if min_similarity is None else min_similarity
                query = np.asarray(encoding.embedding).reshape(1, -1)
                keys = index.vectors.search_many(query, minimum - _SEARCH_MARGIN)[0]
                each = np.arange(len(keys))
                _, _, sims = index.judge(index.files([encoding]), index.stored(keys), each * 0, each, each < 0)
                hits = {k: s for k, s in zip(keys.tolist(), sims.tolist(), strict=True) if s >= minimum}
            else:
                raise StoreError(f"unknown method {method!r}: one of {', '.join(NEAR_METHODS)}")
            if own is not None:
                hits.pop(own, None)
            paths = self._store.paths(hits)
            return sorted((_match(paths[k], method, s) for k, s in hits.items() if k in paths), key=_strength)

    def _column(self, name: str) -> MultiIndexHash:
        """The in-memory column of an imagededup-style hash, read from the store on first use."""
        if name not in self._columns:
            self._columns[name] = MultiIndexHash.from_arrays(*self._store.hash_column(name), tables=False)
            release_free_memory()
        return self._columns[name]

    def explain(self, encoding: Encoding, paths: Sequence[str]) -> dict[str, dict[str, object]]:
        """Every piece of evidence between `encoding` and each stored path, and the rule's decision:
        {"exact": bool, "oriented_distance": int, "similarity": float | None (None without the CNN or an
        embedding), "phash"/"ahash"/"dhash"/"whash": int | None (plain Hamming distance of the
        imagededup-style hashes), "decision": "exact" | "phash" | "cnn" | None, and the tier evidence of
        `matcher.evidence_of`: "metadata", "metadata_detail", "pixels", "pixel_detail",
        "tier": "duplicate" | "similar" | None, "tier_evidence"}. Ignored pairs are explained like any
        other: the decision is the rule's."""
        with self._lock:
            found = {path: self._store.lookup(path, embedding=True) for path in paths}
            unknown = sorted(p for p, hit in found.items() if hit is None or hit[1].encoding is None)
            if unknown:
                raise StoreError(f"not in the index: {', '.join(unknown)}")
            stored = [hit[1].encoding for hit in found.values() if hit is not None and hit[1].encoding is not None]
            if not stored:
                return {}
            index = self._index
            exact = np.array([enc.digest == encoding.digest for enc in stored], bool)
            each = np.arange(len(stored))
            codes, distances, sims = index.judge(index.files([encoding]), index.files(stored), each * 0, each, exact)
            result: dict[str, dict[str, object]] = {}
            for k, (path, enc) in enumerate(zip(found, stored, strict=True)):
                evidence: dict[str, object] = {
                    "exact": bool(exact[k]),
                    "oriented_distance": int(distances[k]),
                    "similarity": None if np.isnan(sims[k]) else round(float(sims[k]), 4),
                }
                for name in IMAGEDEDUP_HASHES:
                    both = name in enc.hashes and name in encoding.hashes
                    evidence[name] = (enc.hashes[name] ^ encoding.hashes[name]).bit_count() if both else None
                evidence["decision"] = _DECISIONS[codes[k] - 1] if codes[k] else None
                decision = _DECISIONS[codes[k] - 1] if codes[k] else None
                tiered = evidence_of((encoding.capture, encoding.thumb), (enc.capture, enc.thumb), decision)
                if decision is None:
                    tiered["tier"], tiered["tier_evidence"] = None, "the rule does not accept the pair"
                evidence.update(tiered)
                result[path] = evidence
            return result

    def _current_groups(
        self, under: str | None, method: str | None, tier: str = DUPLICATE
    ) -> list[tuple[list[int], list[_RawLink]]]:
        """Current groups of a tier as (member rids, that tier's links among them), members under `under`."""
        a, b, methods, codes, scores = self._store.links()
        similar = np.array([m.startswith(SIMILAR_PREFIX) for m in methods] + [False], bool)[codes]
        keep = similar if tier == SIMILAR else ~similar
        if method is not None:
            keep &= codes == (methods.index(method) if method in methods else -1)
        groups = self._partition(method, tier)
        if under is not None:
            inside = self._store.rids_under(under)
            groups = [kept for g in groups if len(kept := [r for r in g if r in inside]) > 1]
        group_of = {r: i for i, g in enumerate(groups) for r in g}
        links: list[list[_RawLink]] = [[] for _ in groups]
        for x, y, code, score in zip(
            a[keep].tolist(), b[keep].tolist(), codes[keep].tolist(), scores[keep].tolist(), strict=True
        ):
            i = group_of.get(x)
            if i is not None and group_of.get(y) == i:
                links[i].append((x, y, methods[code], score))
        return list(zip(groups, links, strict=True))

    def groups(self, under: str | None = None, method: str | None = None, tier: str = DUPLICATE) -> list[Group]:
        """Groups of a tier, >= 2 members each: duplicate groups (`search.groups.partition` of the duplicate
        links; with `method`, of that method's links only) or, with tier SIMILAR, unions of similar links.

        With `under`, only the members under that directory are shown (groups left with one are not).
        """
        with self._lock:
            current = self._current_groups(under, method, tier)
            path = self._store.paths(r for members, _ in current for r in members)
            return sorted((_group(members, links, path) for members, links in current), key=lambda g: g.paths)

    def group_page(
        self, tier: str = DUPLICATE, offset: int = 0, limit: int | None = None, under: str | None = None,
        method: str | None = None, protected_roots: Iterable[str] = (),
    ) -> GroupPage:
        """The groups of a tier ranked by space to free, most first (ties: by the first file shown, the
        keeper or else the first path), `limit` of them from `offset`, and the totals. Only the page's groups
        are built with their links, so a page of a 10,000-group library costs one pass over the records."""
        protected = tuple(protected_roots)
        with self._lock:
            key = (tier, under, method, protected)
            if key not in self._ranked:  # the ranking stays until the next commit: later pages are slices
                self._ranked[key] = self._rank(tier, under, method, protected)
            current, ranked = self._ranked[key]
            chosen = ranked[offset:None if limit is None else offset + limit]
            path = self._store.paths(r for _, _, index, _ in chosen for r in current[index][0])
            page = tuple(RankedGroup(_group(*current[index], path), plan, free) for free, _, index, plan in chosen)
            return GroupPage(page, len(ranked), sum(entry[0] for entry in ranked))

    def _rank(
        self, tier: str, under: str | None, method: str | None, protected: tuple[str, ...]
    ) -> tuple[list[tuple[list[int], list[_RawLink]]], list[_Ranked]]:
        """The tier's groups and their ranking for group_page (one pass over the members' records)."""
        current = self._current_groups(under, method, tier)
        records = self._store.records(r for members, _ in current for r in members)
        ranked: list[_Ranked] = []
        for index, (members, _) in enumerate(current):
            present = [r for r in members if r in records]
            size = {records[r].key.path: records[r].key.size for r in present}
            plan = _keep_plan([records[r] for r in present], protected) if tier == DUPLICATE and present else None
            if plan is not None and plan.remove:
                free, first = sum(size[p] for p in plan.remove), min(plan.keep)
            else:
                free, first = sum(size.values()) - max(size.values(), default=0), min(size, default="")
            ranked.append((free, first, index, plan))
        ranked.sort(key=lambda entry: (-entry[0], entry[1]))
        return current, ranked

    def keep_plan(
        self, under: str | None = None, protected_roots: Iterable[str] = (), method: str | None = None
    ) -> list[KeepPlan]:
        """Per duplicate group: the kept files, why, and the files one could delete (`search.keep`); files
        under a protected root are never proposed (when a group has some, they are its keepers)."""
        protected = tuple(protected_roots)
        with self._lock:
            current = self._current_groups(under, method)
            records = self._store.records(r for members, _ in current for r in members)
            plans = [_keep_plan([records[r] for r in members], protected) for members, _ in current]
        return sorted(plans, key=lambda plan: plan.keep)

    def to_remove(
        self, under: str | None = None, protected_roots: Iterable[str] = (), method: str | None = None
    ) -> list[str]:
        """Files one could delete keeping one per group (`keep_plan`), sorted."""
        return sorted(path for plan in self.keep_plan(under, protected_roots, method) for path in plan.remove)

    def stats(self) -> dict[str, object]:
        """Counts for `status`: records by kind, index sizes ("dct", and "cnn" with the CNN), groups."""
        with self._lock:
            index = self._index
            sizes = {ORIENTED_HASH: len(index.dct)} | ({CNN: len(index.vectors)} if index.vectors is not None else {})
            return {
                "seq": self._store.seq(),
                "records": self._store.counts(),
                "index": sizes,
                "groups": len(groups := self._partition()),
                "grouped_files": grouped(groups),
                "ignored": len(self._ignored),
                "matcher": link_rule(index.settings),
            }


def _copies_of(classes: Iterable[Sequence[int]]) -> set[int]:
    """The byte copies of records sharing a digest: all but the smallest rid of each class (loners aside)."""
    return {rid for rids in classes for rid in sorted(rids)[1:]}


def _class_pairs(rids: Sequence[int], copies: AbstractSet[int]) -> set[tuple[int, int]]:
    """The exact links a class of byte-identical records keeps: every pair with a non-copy in it."""
    return {_pair_key(n, o) for n in rids if n not in copies for o in rids if o != n}


def _unique(links: Iterable[Link], ignored: AbstractSet[tuple[int, int]]) -> list[Link]:
    """One link per pair (the first found), none for an ignored pair."""
    unique: dict[tuple[int, int], Link] = {}
    for ln in links:
        if _pair_key(ln.a, ln.b) not in ignored:
            unique.setdefault(_pair_key(ln.a, ln.b), ln)
    return list(unique.values())


def _group(members: Sequence[int], links: Iterable[_RawLink], path: Mapping[int, str]) -> Group:
    """A group as callers see it: sorted member paths, and its links by path, each path's strongest first."""
    shown = [(path[x], _match(path[y], m, score)) for x, y, m, score in links]
    shown.sort(key=lambda link: (link[0], _strength(link[1])))
    return Group(tuple(sorted(path[r] for r in members)), tuple(shown))


def sets_of(records: Mapping[int, FileRecord]) -> dict[int, int]:
    """Each record of a capture set (`search.sets`) among `records` -> its set's smallest rid."""
    captures = {rid: rec.encoding.capture if rec.encoding is not None else None for rid, rec in records.items()}
    return capture_sets({rid: rec.key.path for rid, rec in records.items()},
                        {rid: c.format if c is not None else None for rid, c in captures.items()},
                        {rid: identity(c) for rid, c in captures.items()})


def _keep_plan(records: Sequence[FileRecord], protected: Sequence[str]) -> KeepPlan:
    """The keep policy's plan for one group's records; members under a protected root are its keepers (with
    their capture sets: a set is kept or proposed whole)."""
    sets = sets_of(dict(enumerate(records)))
    ordered, why = choose([_candidate(rec, records[sets[i]].key.path if i in sets else None)
                           for i, rec in enumerate(records)])
    guarded_sets = {c.capture_set or c.path for c in ordered if any(is_under(c.path, p) for p in protected)}
    guarded = [c.path for c in ordered if (c.capture_set or c.path) in guarded_sets]
    keepers = guarded or [c.path for c in keep_whole(ordered)]
    if guarded:
        why = "in a protected root"
    return KeepPlan(tuple(keepers), why, tuple(c.path for c in ordered if c.path not in keepers))


def _candidate(rec: FileRecord, capture_set: str | None = None) -> Candidate:
    enc = rec.encoding
    pixels = enc.width * enc.height if enc is not None else 0
    return Candidate(rec.key.path, pixels, rec.key.mtime_ns, enc.capture if enc is not None else None, capture_set)
