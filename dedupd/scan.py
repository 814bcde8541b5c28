"""`dedupd scan DIR` without `--method`: one-shot duplicate finding with dedupd's own matcher.

Owns the one-shot orchestration: discover files, encode them in the daemon's encode pool (one read
and one reduced decode per file; a decoder that crashes or hangs costs its file; at most 2 x workers
files in flight), embed the CNN inputs in batches in this process while the
workers keep decoding, then decide every pair with `search.matcher` (rule, then tier) and group
them with `search.groups` (duplicate groups that never hold two different captures). No daemon,
no store: the daemon runs the same encoder, the same `decide`, `tiers` and `partition`.
"""

import logging
import os
import queue
import threading
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from dedupd.encodepool import EncodePool, Outcome
from dedupd.errors import Skipped, SkipReason
from dedupd.imaging.cnn import Encoder, ModelSpec, resolve_model
from dedupd.imaging.encode import EncodedFile
from dedupd.records import Capture
from dedupd.search.groups import partition
from dedupd.search.keep import Candidate, choose
from dedupd.search.matcher import (
    DUPLICATE,
    SIMILAR,
    MatcherSettings,
    PairMatch,
    all_pairs,
    different_captures,
    evidence_rank,
    identity,
    stronger,
    tiers,
)
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

    @property
    def encoded(self) -> int:
        return len(self.files)

    def duplicate_groups(self) -> list[list[int]]:
        """Duplicate groups (`search.groups.partition`): duplicate pairs strongest first, similar pairs apart."""
        duplicates = sorted((p for p in self.pairs if p.tier == DUPLICATE), key=self._strength)
        return partition(((p.first, p.second) for p in duplicates),
                         ((p.first, p.second) for p in self.pairs if p.tier == SIMILAR),
                         {k: identity(f.capture) for k, f in enumerate(self.files)}, different_captures)  # fmt: skip

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
        for group in self.duplicate_groups():
            ordered, why = choose([self._candidate(index) for index in group])
            members = self._members([self._index[c.path] for c in ordered], DUPLICATE)
            members[0]["keep"] = why
            groups.append(members)
        document: dict[str, Any] = {"groups": sorted(groups, key=lambda members: members[0]["path"])}
        if similar:
            document["similar"] = [self._members(group, SIMILAR) for group in self.similar_groups()]
        document["skipped"] = [{"path": str(path), "reason": reason.value, "detail": detail}
                               for path, reason, detail in self.skipped]  # fmt: skip
        return document

    @property
    def _index(self) -> dict[str, int]:
        return {str(f.path): i for i, f in enumerate(self.files)}

    def _candidate(self, index: int) -> Candidate:
        f = self.files[index]
        return Candidate(str(f.path), f.pixels, f.mtime_ns, f.capture)

    def _members(self, group: list[int], tier: str) -> list[dict[str, Any]]:
        """Each member with its strongest pair of that tier inside the group."""
        inside = set(group)
        best: dict[int, PairMatch] = {}
        for pair in self.pairs:
            if pair.tier == tier and pair.first in inside and pair.second in inside:
                for member in (pair.first, pair.second):
                    if member not in best or stronger(pair, best[member]):
                        best[member] = pair
        return [self._member(index, best[index]) for index in group]

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
    try:
        return sorted(Path(path) for path, _ in watch_scan(RootSpec(os.path.abspath(root), recursive=recursive)))
    except OSError:
        return []


class _BatchedEmbedder:
    """Collects CNN inputs by shape and embeds a bucket as soon as it fills: decoding never waits."""

    def __init__(self, encoder: Encoder) -> None:
        self._encoder = encoder
        self._pending: dict[tuple[int, ...], list[tuple[int, np.ndarray]]] = defaultdict(list)
        self.rows: dict[int, np.ndarray] = {}

    def add(self, index: int, tensor: np.ndarray) -> None:
        bucket = self._pending[tensor.shape]
        bucket.append((index, tensor))
        if len(bucket) >= self._encoder.batch_size:
            self._flush(tensor.shape)

    def _flush(self, shape: tuple[int, ...]) -> None:
        bucket = self._pending.pop(shape, [])
        if bucket:
            vectors = self._encoder.embed_prepared([tensor for _, tensor in bucket])
            self.rows.update((index, vector) for (index, _), vector in zip(bucket, vectors, strict=True))

    def finish(self, count: int) -> np.ndarray:
        for shape in list(self._pending):
            self._flush(shape)
        return np.stack([self.rows[index] for index in range(count)]) if count else np.zeros((0, 1), np.float32)


def _encoded_stream(paths: list[Path], cnn_spec: ModelSpec | None, workers: int) -> Iterator[tuple[int, Outcome]]:
    """(index in `paths`, outcome) in completion order, from the daemon's encode pool: a decoder that crashes
    or hangs costs its file, not the scan. At most 2 x `workers` files are in flight and as many outcomes wait
    to be taken, so memory does not grow with the number of files."""
    bound = 2 * workers
    results: queue.Queue[tuple[int, Outcome]] = queue.Queue(bound)
    closing = threading.Event()

    def deliver(index: int, outcome: Outcome) -> None:
        while not closing.is_set():
            try:
                results.put((index, outcome), timeout=0.1)
                return
            except queue.Full:
                continue

    def feed() -> None:
        try:
            for index, path in enumerate(paths):
                pool.submit(index, path)  # blocks while `bound` files are in flight
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
    paths = discover(root, recursive)
    # One ONNX Runtime thread: the decode workers already keep every core busy.
    encoder = Encoder(model, intra_op_threads=1) if settings.cnn_enabled else None
    cnn_spec = encoder.spec if encoder else (resolve_model(model) if settings.cnn_enabled else None)
    embedder = _BatchedEmbedder(encoder) if encoder else None
    result = ScanResult(files=[], pairs=[])
    digests: list[bytes] = []
    variants: list[tuple[int, ...]] = []
    with tqdm(total=len(paths), disable=not progress, unit="img") as bar:
        for index, outcome in _encoded_stream(paths, cnn_spec, max(1, workers)):
            bar.update()
            path = paths[index]
            if not isinstance(outcome, EncodedFile):  # a Skipped (no digest is known here: never SameContent)
                assert isinstance(outcome, Skipped)
                log.info("skipped %s: %s", path, outcome)
                result.skipped.append((path, outcome.reason, outcome.detail))
                continue
            try:
                stat = path.stat()
            except OSError as exc:  # gone (or unreachable) since it was read
                result.skipped.append((path, SkipReason.VANISHED, f"{type(exc).__name__}: {exc.strerror}"))
                continue
            encoding = outcome.encoding
            if embedder is not None and outcome.cnn_input is not None:
                embedder.add(len(result.files), outcome.cnn_input)
            result.files.append(ScannedFile(path, stat.st_size, stat.st_mtime_ns, encoding.width * encoding.height,
                                            encoding.capture, encoding.thumb))
            digests.append(encoding.digest)
            variants.append(outcome.variants)
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
    decided = tiers([p.method for p in pairs], [sides[p.first] for p in pairs],
                    [sides[p.second] for p in pairs])  # fmt: skip
    result.pairs = [replace(p, tier=t, evidence=why) for p, (t, why) in zip(pairs, decided, strict=True)]
    return result
