"""`dedupd scan DIR` without `--method`: one-shot duplicate finding with dedupd's own matcher.

Owns the one-shot orchestration: discover files, encode them in the daemon's encode pool (one read and one
reduced decode per file; a decoder that crashes or hangs costs its file; at most 2 x workers files in flight;
a byte copy of a file already encoded is read, not decoded: its encoding is reused), embed the CNN inputs in
this process's CNN thread while the workers keep decoding, then decide every pair with `search.matcher` (rule,
then tier) and group them with `search.groups` (duplicate groups that never hold two different captures). No
daemon, no store: the daemon runs the same encoder, the same `decide`, `tiers` and `partition`.
"""

import contextlib
import logging
import os
import queue
import threading
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from dedupd.batches import gather
from dedupd.companions import attached, basename_key, companion_kind
from dedupd.encodepool import EncodePool, Outcome, SameContent
from dedupd.errors import QUIET_REASONS, Skipped, SkipReason
from dedupd.imaging.cnn import Encoder, ModelSpec, resolve_model
from dedupd.records import Capture
from dedupd.search.groups import partition
from dedupd.search.keep import Candidate, choose, keepers
from dedupd.search.matcher import (
    DUPLICATE,
    SIMILAR,
    MatcherSettings,
    PairMatch,
    Side,
    all_pairs,
    different_captures,
    evidence_rank,
    identity,
    stronger,
    tiers,
)
from dedupd.search.sets import capture_sets
from dedupd.search.verify import KEYPOINT_BUDGET, KeypointCache
from dedupd.watch import RootSpec
from dedupd.watch import scan as watch_scan

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ScannedFile:
    """One encoded file of the scan and what the keep policy needs about it."""

    path: Path
    size: int
    mtime_ns: int
    pixels: int
    capture: Capture | None = None
    thumb: bytes | None = None


@dataclass(slots=True)
class ScanResult:
    files: list[ScannedFile]
    pairs: list[PairMatch]
    skipped: list[tuple[Path, SkipReason, str]] = field(default_factory=list)
    #: Files whose bytes were those of a file encoded before them: read and digested, not decoded.
    reused: int = 0
    #: Files that belong to an image by their name (`dedupd.companions.companion_kind`): never decoded or skipped.
    companions: dict[Path, SkipReason] = field(default_factory=dict)

    @property
    def encoded(self) -> int:
        return len(self.files)

    def duplicate_groups(self) -> list[list[int]]:
        """Duplicate groups (`search.groups.partition`): duplicate pairs strongest first, similar pairs apart."""
        duplicates = sorted((p for p in self.pairs if p.tier == DUPLICATE), key=self._strength)
        return partition(((p.first, p.second) for p in duplicates),
                         ((p.first, p.second) for p in self.pairs if p.tier == SIMILAR),
                         {k: identity(f.capture) for k, f in enumerate(self.files)}, different_captures,
                         self._sets())  # fmt: skip

    def _sets(self) -> dict[int, int]:
        """Each file of a capture set (`search.sets`) -> its set's first file."""
        return capture_sets({k: str(f.path) for k, f in enumerate(self.files)},
                            {k: f.capture.format if f.capture else None for k, f in enumerate(self.files)},
                            {k: identity(f.capture) for k, f in enumerate(self.files)})  # fmt: skip

    def similar_groups(self) -> list[list[int]]:
        """Groups of different captures of one scene: connected by similar pairs (chains allowed: for culling)."""
        return partition((p.first, p.second) for p in sorted(self.pairs, key=self._strength) if p.tier == SIMILAR)

    def _strength(self, pair: PairMatch) -> tuple[tuple[int, float], str, str]:
        return (evidence_rank(pair.method, pair.score), str(self.files[pair.first].path),
                str(self.files[pair.second].path))  # fmt: skip

    def to_json(self, root: Path, *, similar: bool = True) -> dict[str, Any]:
        """DESIGN.md's scan document: duplicate groups (keeper first, with why) with each member's strongest
        match inside its group, and (with `similar`) the similar groups in the same shape."""
        groups = []
        sets = self._sets()
        named: dict[tuple[str, str], list[str]] = {}
        for companion in self.companions:
            named.setdefault(basename_key(str(companion)), []).append(str(companion))
        index_of = {str(f.path): i for i, f in enumerate(self.files)}
        duplicate_groups = self.duplicate_groups()
        for group, inside in zip(duplicate_groups, self._pairs_inside(duplicate_groups, DUPLICATE), strict=True):
            ordered, why = choose([self._candidate(index, sets) for index in group])
            members = self._members([index_of[c.path] for c in ordered], inside, sets, named)
            for member in members[:len(keepers(ordered))]:
                member["keep"] = why
            groups.append(members)
        document: dict[str, Any] = {"groups": sorted(groups, key=lambda members: members[0]["path"])}
        if similar:
            similar_groups = self.similar_groups()
            document["similar"] = [self._members(group, inside, named=named) for group, inside
                                   in zip(similar_groups, self._pairs_inside(similar_groups, SIMILAR), strict=True)]
        document["skipped"] = [{"path": str(path), "reason": reason.value, "detail": detail}
                               for path, reason, detail in self.skipped]  # fmt: skip
        document["companions"] = {kind.value: sum(1 for k in self.companions.values() if k == kind)
                                  for kind in (SkipReason.SIDECAR, SkipReason.MOTION)}  # fmt: skip
        return document

    def _pairs_inside(self, groups: list[list[int]], tier: str) -> list[list[PairMatch]]:
        """For each of `groups` (disjoint), its pairs of `tier` with both files inside it, in pair order."""
        group_of = {member: k for k, group in enumerate(groups) for member in group}
        inside: list[list[PairMatch]] = [[] for _ in groups]
        for pair in self.pairs:
            if pair.tier == tier and (k := group_of.get(pair.first)) is not None and group_of.get(pair.second) == k:
                inside[k].append(pair)
        return inside

    def _candidate(self, index: int, sets: dict[int, int]) -> Candidate:
        f = self.files[index]
        capture_set = str(self.files[sets[index]].path) if index in sets else None
        return Candidate(str(f.path), f.pixels, f.mtime_ns, f.capture, capture_set)

    def _members(self, group: list[int], inside: list[PairMatch], sets: dict[int, int] | None = None,
                 named: Mapping[tuple[str, str], list[str]] | None = None) -> list[dict[str, Any]]:
        """Each member with its strongest of the pairs `inside` the group (`_pairs_inside`: of the group's tier);
        a capture set's file that matched nothing itself is shown with its set (method `capture_set`, matched: the
        set's first other file). With `named` (the companions by basename), a member's sidecars and motion file
        (`companions`)."""
        best: dict[int, PairMatch] = {}
        for pair in inside:
            for member in (pair.first, pair.second):
                if member not in best or stronger(pair, best[member]):
                    best[member] = pair
        shown = []
        for index in group:
            if index in best:
                shown.append(self._member(index, best[index]))
            else:
                mate = next(m for m in group if m != index and (sets or {}).get(m) == (sets or {}).get(index))
                shown.append({"path": str(self.files[index].path), "method": "capture_set", "distance": 0,
                              "matched": str(self.files[mate].path)})
            if sets and index in sets:
                shown[-1]["capture_set"] = str(self.files[sets[index]].path)
            path = str(self.files[index].path)
            if found := attached(path, named.get(basename_key(path), ())) if named else []:
                shown[-1]["companions"] = [c.document() for c in found]
        return shown

    def _member(self, index: int, pair: PairMatch) -> dict[str, Any]:
        partner = pair.second if pair.first == index else pair.first
        score_key = "similarity" if pair.method == "cnn" else "distance"
        member = {"path": str(self.files[index].path), "method": pair.method, score_key: pair.score,
                  "matched": str(self.files[partner].path)}
        if pair.evidence:
            member["evidence"] = pair.evidence
        return member


def discover(root: Path, recursive: bool) -> list[Path]:
    """Regular files under `root`, sorted, walked as the daemon walks a root with the default policy
    (`dedupd.watch.scan`): hidden files and directories, the default excludes (`@eaDir`, `.thumbnails`,
    recycle bins ...) and symlinks are left out. A root that cannot be listed has no files."""
    return [path for path, _ in _discover_sized(root, recursive)]


def _discover_sized(root: Path, recursive: bool) -> list[tuple[Path, int]]:
    """`discover`'s files with their size when walked."""
    try:
        found = watch_scan(RootSpec(os.path.abspath(root), recursive=recursive))
        return sorted((Path(path), st.st_size) for path, st in found)
    except OSError:
        return []


def submission_order(sizes: list[int]) -> tuple[list[int], dict[int, int]]:
    """The order to encode files of these sizes in, and for each file that is not the first of its size the
    index of that first one. Only those can be byte copies of a file before them: submitted after all the
    first ones, each with its first's digest, they are read but not decoded when they are copies of it."""
    first_of: dict[int, int] = {}
    later: dict[int, int] = {}
    for index, size in enumerate(sizes):
        if size in first_of:
            later[index] = first_of[size]
        else:
            first_of[size] = index
    return list(first_of.values()) + list(later), later


class _Published:
    """The digest each file was encoded with (None: it was not), from the scan's loop to its feeder."""

    def __init__(self, closing: threading.Event) -> None:
        self._closing = closing
        self._cond = threading.Condition()
        self._digests: dict[int, bytes | None] = {}

    def publish(self, index: int, digest: bytes | None) -> None:
        with self._cond:
            self._digests[index] = digest
            self._cond.notify_all()

    def wait(self, index: int) -> bytes | None:
        """The digest of file `index` once published; None at once when the scan is closing."""
        with self._cond:
            while index not in self._digests and not self._closing.is_set():
                self._cond.wait(0.1)
            return self._digests.get(index)


class _BackgroundEmbedder:
    """Embeds CNN inputs in a thread of its own as they come (ONNX Runtime runs without the GIL): the scan's
    loop hands a tensor over and goes back to the pool's outcomes, so the workers never wait while a batch is
    embedded. What queued up meanwhile (at most `batch_size`) is embedded together, equal shapes in one run."""

    def __init__(self, encoder: Encoder) -> None:
        self._encoder = encoder
        self._queue: queue.Queue[tuple[int, np.ndarray] | None] = queue.Queue(4 * encoder.batch_size)
        self._aliases: dict[int, int] = {}
        self._error: Exception | None = None
        self.rows: dict[int, np.ndarray] = {}
        self._thread = threading.Thread(target=self._run, name="dedupd-scan-cnn", daemon=True)
        self._thread.start()

    def alias(self, index: int, source: int) -> None:
        """Row `index` is row `source` (a byte copy: same bytes, same tensor, embedded once)."""
        self._aliases[index] = source

    def add(self, index: int, tensor: np.ndarray) -> None:
        """Queue a tensor (blocks while the queue is full); raises the CNN's error once it has failed."""
        if self._error is not None:
            raise self._error
        self._queue.put((index, tensor))

    def _run(self) -> None:
        while (first := self._queue.get()) is not None:
            self._embed(gather(self._queue, first, self._encoder.batch_size, 0.0))

    def _embed(self, batch: list[tuple[int, np.ndarray]]) -> None:
        if self._error is not None:
            return  # failed before: keep taking inputs so that `add` never blocks on a dead consumer
        try:
            vectors = self._encoder.embed_prepared([tensor for _, tensor in batch])
        except Exception as exc:  # noqa: BLE001 - raised in the scan's thread by `add` or `finish`
            self._error = exc
            return
        self.rows.update((index, vector) for (index, _), vector in zip(batch, vectors, strict=True))

    def close(self) -> None:
        """Stop the thread once it has embedded what is queued. Idempotent."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def finish(self, count: int) -> np.ndarray:
        """The (count, dim) embeddings in row order, once everything queued is embedded."""
        self.close()
        if self._error is not None:
            raise self._error
        self.rows.update((index, self.rows[source]) for index, source in self._aliases.items() if source in self.rows)
        return np.stack([self.rows[index] for index in range(count)]) if count else np.zeros((0, 1), np.float32)


def _encoded_stream(
    paths: list[Path], cnn_spec: ModelSpec | None, workers: int, *, sizes: list[int], published: _Published,
    closing: threading.Event,
) -> Iterator[tuple[int, Outcome]]:
    """(index in `paths`, outcome) in completion order, from the daemon's encode pool: a decoder that crashes
    or hangs costs its file, not the scan. At most 2 x `workers` files are in flight and as many outcomes wait
    to be taken, so memory does not grow with the number of files. A file of the same size as one before it
    (`submission_order`) waits until that one's digest is `published` and is submitted with it: its outcome
    is SameContent when it is a byte copy of it."""
    bound = 2 * workers
    results: queue.Queue[tuple[int, Outcome]] = queue.Queue(bound)
    order, later = submission_order(sizes)

    def deliver(index: int, outcome: Outcome) -> None:
        while not closing.is_set():
            try:
                results.put((index, outcome), timeout=0.1)
                return
            except queue.Full:
                continue

    def feed() -> None:
        try:
            for index in order:
                known = published.wait(later[index]) if index in later else None
                pool.submit(index, paths[index], known)  # blocks while `bound` files are in flight
        except RuntimeError:
            pass  # the pool closed: the scan ended early

    pool: EncodePool[int] = EncodePool(workers, deliver, cnn_spec=cnn_spec, max_pending=bound)
    pool.start()
    feeder = threading.Thread(target=feed, name="dedupd-scan-feed", daemon=True)
    feeder.start()
    try:
        for _ in paths:
            yield results.get()
    finally:
        closing.set()
        pool.close()
        feeder.join()


def deal_by_component(pairs: list[tuple[int, int]], threads: int) -> list[list[int]]:
    """The indices of `pairs` dealt into at most `threads` runs, each connected component of files (pairs that
    share a file, transitively) whole in one run, largest first to the run with fewest pairs: a thumbnail's
    keypoints are then computed in one thread only. A run holds its components one after the other (each in pair
    order), so a bounded keypoint cache keeps what its next pairs need; empty runs left out."""
    component = {node: k for k, group in enumerate(partition(pairs)) for node in group}
    members: dict[int, list[int]] = {}
    for index, (first, _) in enumerate(pairs):
        members.setdefault(component[first], []).append(index)
    runs: list[list[int]] = [[] for _ in range(max(1, threads))]
    for indices in sorted(members.values(), key=len, reverse=True):
        min(runs, key=len).extend(indices)
    return [run for run in runs if run]


def _tiers_in_threads(
    pairs: list[tuple[int, int]], methods: list[str], first: list[Side], second: list[Side], threads: int
) -> list[tuple[str, str]]:
    """`tiers` of the pairs (file indices `pairs`), dealt into `threads` runs by connected component
    (`deal_by_component`), each decided in a thread of its own: the encode workers are done by then and
    OpenCV's keypoints, RANSAC and warps run without the GIL (camera-import, load 11: 0.78-0.87x the wall of
    one thread). A run's thread has its own keypoint cache, so files shared by two runs would be worked twice
    (cut in list order, ukbench's 3,025 pairs shared 880 of their 1,362 files between two runs), bounded
    (`KEYPOINT_BUDGET`) so that a large library's scan does not hold every verified thumbnail's keypoints. A
    pair's verdict does not depend on the other pairs, so the verdicts are the same as one `tiers` call's."""
    runs = deal_by_component(pairs, threads)

    def decide(run: list[int]) -> list[tuple[str, str]]:
        picked = [methods[k] for k in run], [first[k] for k in run], [second[k] for k in run]
        return tiers(*picked, KeypointCache(KEYPOINT_BUDGET))

    if len(runs) <= 1:
        parts = [decide(run) for run in runs]
    else:
        with ThreadPoolExecutor(len(runs), thread_name_prefix="dedupd-scan-tiers") as pool:
            parts = list(pool.map(decide, runs))
    verdicts: dict[int, tuple[str, str]] = {}
    for run, part in zip(runs, parts, strict=True):
        verdicts.update(zip(run, part, strict=True))
    return [verdicts[k] for k in range(len(methods))]


def scan_directory(
    root: Path,
    settings: MatcherSettings,
    *,
    recursive: bool = False,
    workers: int = 1,
    progress: bool = False,
    model: str | None = None,
) -> ScanResult:
    """Encode every file under `root` and decide every pair; bad files are skipped with a reason."""
    found = _discover_sized(root, recursive)
    names = {str(path) for path, _ in found}
    companions = {path: kind for path, _ in found if (kind := companion_kind(str(path), names.__contains__))}
    sized = [(path, size) for path, size in found if path not in companions]
    paths = [path for path, _ in sized]
    # One ONNX Runtime thread: the decode workers already keep every core busy.
    encoder = Encoder(model, intra_op_threads=1) if settings.cnn_enabled else None
    cnn_spec = encoder.spec if encoder else (resolve_model(model) if settings.cnn_enabled else None)
    embedder = _BackgroundEmbedder(encoder) if encoder else None
    result = ScanResult(files=[], pairs=[], companions=companions)
    digests: list[bytes] = []
    variants: list[tuple[int, ...]] = []
    by_digest: dict[bytes, int] = {}  # digest -> index in result.files of the first file encoded with it
    closing = threading.Event()
    published = _Published(closing)
    stream = _encoded_stream(paths, cnn_spec, max(1, workers), sizes=[size for _, size in sized],
                             published=published, closing=closing)  # fmt: skip
    # The embedder's thread stops with the loop, also when the loop ends in an error.
    with (
        tqdm(total=len(paths), disable=not progress, unit="img") as bar,
        contextlib.closing(embedder) if embedder is not None else contextlib.nullcontext(),
    ):
        for index, outcome in stream:
            bar.update()
            path = paths[index]
            if isinstance(outcome, Skipped):
                level = logging.DEBUG if outcome.reason in QUIET_REASONS else logging.INFO
                log.log(level, "skipped %s: %s", path, outcome)
                result.skipped.append((path, outcome.reason, outcome.detail))
                published.publish(index, None)
                continue
            try:
                stat = path.stat()
            except OSError as exc:  # gone (or unreachable) since it was read
                result.skipped.append((path, SkipReason.VANISHED, f"{type(exc).__name__}: {exc.strerror}"))
                published.publish(index, None)
                continue
            here = len(result.files)
            if isinstance(outcome, SameContent):  # the bytes of a file encoded before: its encoding is this one's
                source = by_digest[outcome.digest]  # published, so encoded, before this file was submitted
                first = result.files[source]
                result.files.append(replace(first, path=path, size=stat.st_size, mtime_ns=stat.st_mtime_ns))
                digests.append(digests[source])
                variants.append(variants[source])
                if embedder is not None:
                    embedder.alias(here, source)
                result.reused += 1
            else:
                encoding = outcome.encoding
                if embedder is not None and outcome.cnn_input is not None:
                    embedder.add(here, outcome.cnn_input)
                result.files.append(ScannedFile(path, stat.st_size, stat.st_mtime_ns,
                                                encoding.width * encoding.height, encoding.capture, encoding.thumb))
                digests.append(encoding.digest)
                variants.append(outcome.variants)
            by_digest.setdefault(digests[here], here)
            published.publish(index, digests[here])
    count = len(result.files)
    order = sorted(range(count), key=lambda i: result.files[i].path)  # outcomes came in completion order
    result.files = [result.files[i] for i in order]
    result.skipped.sort(key=lambda skip: skip[0])
    digest_index: dict[bytes, int] = {}
    digest_ids = np.array([digest_index.setdefault(digests[i], len(digest_index)) for i in order], dtype=np.int64)
    variant_matrix = np.array([variants[i] for i in order], dtype=np.uint64).reshape(count, 8)
    embeddings = embedder.finish(count)[order] if embedder else None
    pairs = list(all_pairs(digest_ids, variant_matrix, embeddings, settings))
    sides = [(f.capture, f.thumb) for f in result.files]
    decided = _tiers_in_threads([(p.first, p.second) for p in pairs], [p.method for p in pairs],
                                [sides[p.first] for p in pairs], [sides[p.second] for p in pairs],
                                max(1, workers))  # fmt: skip
    result.pairs = [replace(p, tier=t, evidence=why) for p, (t, why) in zip(pairs, decided, strict=True)]
    return result
