"""Keeps the store and the live index in step: durable before visible, under one lock.

The live index is rebuilt from the store at open and then follows every committed batch:
- one MultiIndexHash per configured hash method (exact Hamming range queries; faster than a BK-tree at
  these thresholds, see BENCHMARKS.md "Index and store"),
- the embedding matrix (when a CNN threshold is configured),
- exact duplicates through the store's digest map (LMDB, not duplicated in memory),
- duplicate groups: connected components of the stored match links.

`apply(changes)` finds the links of the new records against the index as it was before the batch plus
among the batch itself, commits records and links in one store transaction (so groups rebuild at open
without searching again), and only then updates the index. Links are computed with the configured
thresholds; when the configuration changes, the affected method's links are recomputed at open.

Keep policy of `to_remove` (deterministic, documented for users): in each group keep the file with the
most pixels, then the largest file, then the oldest mtime, then the smallest path. Files under a protected
root are never proposed; when a group has some, they are its keepers and every other member is proposed.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from dedupd.errors import StoreError
from dedupd.records import Encoding, FileRecord, Match
from dedupd.search.groups import Groups
from dedupd.search.mih import MultiIndexHash
from dedupd.search.vectors import EmbeddingIndex
from dedupd.store import DEFAULT_MAP_SIZE, Change, Commit, Link, Store

log = logging.getLogger(__name__)

EXACT = "exact"
CNN = "cnn"

type _RawLink = tuple[int, int, str, float]  # rid a, rid b, method, score


@dataclass(frozen=True, slots=True)
class IndexConfig:
    """What the live index links: hash methods with their max distance, CNN min similarity, exact."""

    hash_thresholds: Mapping[str, int] = field(default_factory=lambda: {"phash": 10})
    cnn_min_similarity: float | None = None
    exact: bool = True

    def link_params(self) -> dict[str, float | bool]:
        params: dict[str, float | bool] = {m: t for m, t in self.hash_thresholds.items()}
        if self.exact:
            params[EXACT] = True
        if self.cnn_min_similarity is not None:
            params[CNN] = self.cnn_min_similarity
        return params


@dataclass(frozen=True, slots=True)
class Group:
    """A duplicate group: member paths (sorted) and the matches that join them."""

    paths: tuple[str, ...]
    links: tuple[tuple[str, Match], ...]


@dataclass(frozen=True, slots=True)
class Applied:
    """A committed batch: its sequence number and, per newly added path, what it matched."""

    seq: int
    matches: Mapping[str, list[Match]]


def _match(path: str, method: str, score: float) -> Match:
    if method == CNN:
        return Match(path, method, similarity=float(score))
    return Match(path, method, distance=int(score))


def _match_order(m: Match) -> tuple[float, str, str]:
    return (m.distance if m.distance is not None else -(m.similarity or 0.0), m.path, m.method)


def _under(path: str, root: str) -> bool:
    root = root.rstrip("/")
    return path == root or path.startswith(root + "/")


class Catalog:
    """The store plus its live index; all operations are serialised by one lock."""

    def __init__(self, store: Store, config: IndexConfig) -> None:
        if config.cnn_min_similarity is not None and not store.dim:
            raise StoreError("a CNN similarity is configured but the store has no CNN model/dimension")
        self._store = store
        self._config = config
        self._lock = threading.RLock()
        self._hashes: dict[str, MultiIndexHash] = {}
        self._vectors: EmbeddingIndex | None = None
        self._groups = Groups()
        self._rebuild()

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
    ) -> Catalog:
        store = Store.open(state_dir, map_size=map_size, encoder_version=encoder_version, model_id=model_id, dim=dim)
        try:
            return cls(store, config)
        except BaseException:
            store.close()
            raise

    def close(self) -> None:
        with self._lock:
            self._store.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def store(self) -> Store:
        return self._store

    def reconfigure(self, config: IndexConfig) -> None:
        """Switch to new thresholds (a reload): relinks the methods whose parameters changed, as at open."""
        with self._lock:
            if config.cnn_min_similarity is not None and not self._store.dim:
                raise StoreError("a CNN similarity is configured but the store has no CNN model/dimension")
            self._config = config
            self._hashes, self._vectors = {}, None
            self._rebuild()

    # ------------------------------------------------------------------ rebuild
    def _rebuild(self) -> None:
        """Load every index structure from the store; relink methods whose parameters changed."""
        for method in self._config.hash_thresholds:
            self._hashes[method] = MultiIndexHash.from_arrays(*self._store.hash_column(method))
        if self._config.cnn_min_similarity is not None:
            self._vectors = EmbeddingIndex.from_arrays(*self._store.embeddings())
        wanted, stored = self._config.link_params(), self._store.link_params()
        for method in sorted(set(wanted) | {m for m, p in stored.items() if p is not None}):
            if stored.get(method) != wanted.get(method):
                if self._store.counts().get("encoded"):
                    log.warning("link parameters of %s changed (%s -> %s): relinking every record",
                                method, stored.get(method), wanted.get(method))  # fmt: skip
                self._store.replace_links(method, self._relink(method), wanted.get(method))
        a, b, methods, codes, _ = self._store.links()
        active = np.isin(codes, [i for i, m in enumerate(methods) if m in wanted])
        self._groups = Groups.from_edges(a[active], b[active])
        self._store.unmap()
        _return_freed_memory()

    def _relink(self, method: str) -> list[Link]:
        """Every link of `method` among all stored records (slow: one search per record)."""
        links: list[Link] = []
        if method == EXACT and self._config.exact:
            by_digest: dict[bytes, list[int]] = {}
            for rid, rec in self._store.iter_records():
                if rec.encoding is not None:
                    by_digest.setdefault(rec.encoding.digest, []).append(rid)
            links = [Link(r[0], x, EXACT, 0.0) for r in by_digest.values() for x in r[1:]]
        elif method in self._hashes:
            threshold = self._config.hash_thresholds[method]
            for rid, value in zip(*self._store.hash_column(method), strict=True):
                keys, dists = self._hashes[method].query(int(value), threshold)
                links += [
                    Link(int(rid), k, method, d) for k, d in zip(keys.tolist(), dists.tolist(), strict=True) if k > rid
                ]
        elif method == CNN and self._vectors is not None:
            rids, rows = self._store.embeddings()
            found = self._vectors.search_many(rows, self._config.cnn_min_similarity or 1.0)
            for rid, (keys, sims) in zip(rids.tolist(), found, strict=True):
                links += [Link(rid, k, CNN, s) for k, s in zip(keys.tolist(), sims.tolist(), strict=True) if k > rid]
        return links

    # ------------------------------------------------------------------ updates
    def apply(self, changes: Sequence[Change]) -> Applied:
        """Commit `changes` with their links (one transaction), then update the live index."""
        with self._lock:
            found: list[Link] = []

            def find(commit: Commit) -> list[Link]:
                found[:] = self._find_links(commit)
                return found

            commit = self._store.commit(changes, link=find)
            self._follow(commit, found)
            return Applied(commit.seq, self._matches_of_added(commit, found))

    def _find_links(self, commit: Commit) -> list[Link]:
        """Links of the batch's new records: to records before the batch (minus removed) and among them."""
        new = [(rid, rec.encoding) for rid, rec in commit.added if rec.encoding is not None]
        if not new:
            return []
        removed = set(commit.removed)
        rids = np.array([rid for rid, _ in new], np.int64)
        links: list[Link] = []

        def add(method: str, i: int, old: Iterable[tuple[int, float]], batch: Iterable[tuple[int, float]]) -> None:
            links.extend(Link(int(rids[i]), k, method, s) for k, s in old if k not in removed)
            links.extend(Link(int(rids[i]), int(rids[j]), method, s) for j, s in batch if j < i)

        if self._config.exact:
            first_of: dict[bytes, list[int]] = {}
            for i, (_, enc) in enumerate(new):
                earlier = first_of.setdefault(enc.digest, [])
                add(EXACT, i, ((k, 0.0) for k in self._store.rids_for_digest(enc.digest)), ((j, 0.0) for j in earlier))
                earlier.append(i)
        for method, threshold in self._config.hash_thresholds.items():
            have = [i for i, (_, enc) in enumerate(new) if method in enc.hashes]
            values = np.array([new[i][1].hashes[method] for i in have], np.uint64)
            batch = MultiIndexHash.from_arrays(np.arange(len(have)), values)
            for pos, i in enumerate(have):
                keys, dists = self._hashes[method].query(int(values[pos]), threshold)
                near, near_d = batch.query(int(values[pos]), threshold)
                add(
                    method,
                    i,
                    zip(keys.tolist(), dists.tolist(), strict=True),
                    ((have[j], d) for j, d in zip(near.tolist(), near_d.tolist(), strict=True)),
                )
        if self._vectors is not None and self._config.cnn_min_similarity is not None:
            have = [i for i, (_, enc) in enumerate(new) if enc.embedding is not None]
            if have:
                rows = np.stack([np.asarray(new[i][1].embedding, np.float32).ravel() for i in have])
                batch_index = EmbeddingIndex.from_arrays(np.arange(len(have)), rows)
                minimum = self._config.cnn_min_similarity
                old = self._vectors.search_many(rows, minimum)
                inner = batch_index.search_many(rows, minimum)
                for pos, i in enumerate(have):
                    keys, sims = old[pos]
                    near, near_s = inner[pos]
                    add(
                        CNN,
                        i,
                        zip(keys.tolist(), sims.tolist(), strict=True),
                        ((have[j], s) for j, s in zip(near.tolist(), near_s.tolist(), strict=True)),
                    )
        return links

    def _follow(self, commit: Commit, links: Sequence[Link]) -> None:
        """Make a committed batch visible in the index."""
        active = set(self._config.link_params())

        def neighbours(rid: int) -> list[int]:
            return [other for other, method, _ in self._store.links_of(rid) if method in active]

        for rid in commit.removed:
            for index in self._hashes.values():
                index.delete(rid)
            if self._vectors is not None:
                self._vectors.delete(rid)
            self._groups.remove(rid, neighbours)
        encoded = [(rid, rec.encoding) for rid, rec in commit.added if rec.encoding is not None]
        for method, index in self._hashes.items():
            have = [(rid, enc.hashes[method]) for rid, enc in encoded if method in enc.hashes]
            if have:
                index.insert_many([r for r, _ in have], [h for _, h in have])
        if self._vectors is not None:
            have_emb = [(rid, enc.embedding) for rid, enc in encoded if enc.embedding is not None]
            if have_emb:
                self._vectors.insert_many(np.array([r for r, _ in have_emb]), np.stack([e for _, e in have_emb]))
        for ln in links:
            self._groups.link(ln.a, ln.b)

    def _matches_of_added(self, commit: Commit, links: Sequence[Link]) -> dict[str, list[Match]]:
        if not links:
            return {}
        paths = self._store.paths({r for ln in links for r in (ln.a, ln.b)})
        added = {rid for rid, _ in commit.added}
        out: dict[str, list[Match]] = {}
        for ln in links:
            for mine, other in ((ln.a, ln.b), (ln.b, ln.a)):
                if mine in added:
                    out.setdefault(paths[mine], []).append(_match(paths[other], ln.method, ln.score))
        return {p: sorted(ms, key=_match_order) for p, ms in out.items()}

    # ------------------------------------------------------------------ queries
    def near(
        self,
        target: Encoding | str,
        method: str,
        *,
        threshold: int | None = None,
        min_similarity: float | None = None,
    ) -> list[Match]:
        """Near (or, for "exact", identical) files of an encoding or of a stored path, best first.

        The thresholds default to the configured ones; a stored path does not match itself.
        """
        with self._lock:
            own: int | None = None
            if isinstance(target, str):
                found = self._store.lookup(target, embedding=method == CNN)
                if found is None or found[1].encoding is None:
                    raise StoreError(f"{target} is not in the index")
                own, encoding = found[0], found[1].encoding
            else:
                encoding = target
            if method == EXACT:
                hits = [(k, 0.0) for k in self._store.rids_for_digest(encoding.digest)]
            elif method == CNN:
                if self._vectors is None or encoding.embedding is None:
                    raise StoreError("CNN search needs a configured CNN and an embedding")
                minimum = self._config.cnn_min_similarity if min_similarity is None else min_similarity
                keys, sims = self._vectors.search(np.asarray(encoding.embedding), minimum or 0.0)
                hits = list(zip(keys.tolist(), sims.tolist(), strict=True))
            elif method in self._hashes:
                if method not in encoding.hashes:
                    raise StoreError(f"the encoding has no {method} hash")
                limit = self._config.hash_thresholds[method] if threshold is None else threshold
                keys, dists = self._hashes[method].query(encoding.hashes[method], limit)
                hits = list(zip(keys.tolist(), dists.tolist(), strict=True))
            else:
                raise StoreError(f"method {method!r} is not indexed")
            paths = self._store.paths(k for k, _ in hits)
            matches = [_match(paths[k], method, s) for k, s in hits if k != own and k in paths]
            return sorted(matches, key=_match_order)

    def _current_groups(self, under: str | None, method: str | None) -> list[tuple[list[int], list[_RawLink]]]:
        """Current groups as (member rids, links among them), keeping only members under `under`."""
        a, b, methods, codes, scores = self._store.links()
        if method is None:
            keep = np.isin(codes, [i for i, m in enumerate(methods) if m in self._config.link_params()])
            groups = [sorted(g) for g in self._groups]
        else:
            keep = codes == (methods.index(method) if method in methods else -1)
            groups = [sorted(g) for g in Groups.from_edges(a[keep], b[keep])]
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

    def groups(self, under: str | None = None, method: str | None = None) -> list[Group]:
        """Duplicate groups (all configured methods together, or one), each with >= 2 members.

        With `under`, only the members under that directory are shown (groups left with one are not).
        """
        with self._lock:
            current = self._current_groups(under, method)
            path = self._store.paths(r for members, _ in current for r in members)
            result = []
            for members, links in current:
                shown = [(path[x], _match(path[y], m, score)) for x, y, m, score in links]
                shown.sort(key=lambda link: (link[0], _match_order(link[1])))
                result.append(Group(tuple(sorted(path[r] for r in members)), tuple(shown)))
            return sorted(result, key=lambda g: g.paths)

    def to_remove(
        self, under: str | None = None, protected_roots: Iterable[str] = (), method: str | None = None
    ) -> list[str]:
        """Files one could delete keeping one per group (policy in the module doc), sorted."""
        protected = tuple(protected_roots)
        proposed: list[str] = []
        with self._lock:
            current = self._current_groups(under, method)
            records = self._store.records(r for members, _ in current for r in members)
            for members, _ in current:
                recs = sorted((records[r] for r in members), key=_keep_order)
                guarded = [r for r in recs if any(_under(r.key.path, p) for p in protected)]
                keepers = guarded or recs[:1]
                proposed += [r.key.path for r in recs if r not in keepers]
        return sorted(proposed)

    def stats(self) -> dict[str, object]:
        """Counts for `status`: records by kind, index sizes per method, groups."""
        with self._lock:
            return {
                "seq": self._store.seq(),
                "records": self._store.counts(),
                "index": {m: len(ix) for m, ix in self._hashes.items()},
                "embeddings": len(self._vectors) if self._vectors is not None else 0,
                "groups": len(self._groups),
                "grouped_files": self._groups.grouped(),
            }


def _return_freed_memory() -> None:
    """Give the rebuild's freed temporaries back to the OS (glibc keeps them in its heap otherwise)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


def _keep_order(rec: FileRecord) -> tuple[int, int, int, str]:
    enc = rec.encoding
    pixels = enc.width * enc.height if enc is not None else 0
    return (-pixels, -rec.key.size, rec.key.mtime_ns, rec.key.path)
