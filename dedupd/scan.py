"""`dedupd scan DIR` without `--method`: one-shot duplicate finding with dedupd's own matcher.

Owns the one-shot orchestration: discover files, encode them in a worker process pool (one read
and one reduced decode per file), embed the CNN inputs in batches in this process while the
workers keep decoding, then decide every pair with `search.matcher` and group them. No daemon,
no store: the daemon runs the same encoder and the same `decide`.
"""

import logging
import multiprocessing
import os
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from dedupd.errors import Skipped, SkipReason
from dedupd.imaging.cnn import Encoder, ModelSpec, resolve_model
from dedupd.imaging.encode import EncodedFile, encode_path
from dedupd.search.matcher import MatcherSettings, PairMatch, all_pairs, connected_groups, stronger

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ScannedFile:
    """One encoded file of the scan and what the keep policy needs about it."""

    path: Path
    size: int
    mtime_ns: int
    pixels: int


@dataclass(slots=True)
class ScanResult:
    files: list[ScannedFile]
    pairs: list[PairMatch]
    skipped: list[tuple[Path, SkipReason, str]] = field(default_factory=list)

    @property
    def encoded(self) -> int:
        return len(self.files)

    def to_json(self, root: Path) -> dict[str, Any]:
        """DESIGN.md's scan document: groups (keeper first) with each member's strongest match."""
        best: dict[int, PairMatch] = {}
        for pair in self.pairs:
            for member in (pair.first, pair.second):
                if member not in best or stronger(pair, best[member]):
                    best[member] = pair
        groups = []
        for group in connected_groups(len(self.files), self.pairs):
            ordered = sorted(group, key=lambda index: keep_rank(self.files[index]))
            groups.append([self._member(index, best[index]) for index in ordered])
        groups.sort(key=lambda members: members[0]["path"])
        return {
            "groups": groups,
            "skipped": [{"path": str(path), "reason": reason.value, "detail": detail}
                        for path, reason, detail in self.skipped],
        }

    def _member(self, index: int, pair: PairMatch) -> dict[str, Any]:
        partner = pair.second if pair.first == index else pair.first
        score_key = "similarity" if pair.method == "cnn" else "distance"
        return {"path": str(self.files[index].path), "method": pair.method, score_key: pair.score,
                "matched": str(self.files[partner].path)}


def keep_rank(scanned: ScannedFile) -> tuple[int, int, int, str]:
    """Keep policy order: most pixels, then largest file, then oldest mtime, then path."""
    return (-scanned.pixels, -scanned.size, scanned.mtime_ns, str(scanned.path))


def discover(root: Path, recursive: bool) -> list[Path]:
    """Regular files under `root`, sorted; hidden files and directories are left out."""
    found: list[Path] = []
    for directory, subdirs, names in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith(".")) if recursive else []
        found.extend(Path(directory, name) for name in sorted(names) if not name.startswith("."))
    return [path for path in found if path.is_file()]


def _encode_one(cnn_spec: ModelSpec | None, path: Path) -> EncodedFile | Skipped:
    """Worker-side: encode a file, returning (not raising) a Skip so one bad file costs one file."""
    try:
        return encode_path(path, cnn_spec=cnn_spec)
    except Skipped as skip:
        return skip


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


def _encoded_stream(paths: list[Path], cnn_spec: ModelSpec | None, workers: int) -> Iterator[EncodedFile | Skipped]:
    encode = partial(_encode_one, cnn_spec)
    if workers <= 1:
        yield from map(encode, paths)
        return
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        yield from pool.map(encode, paths, chunksize=max(1, min(16, len(paths) // (8 * workers))))


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
        for path, outcome in zip(paths, _encoded_stream(paths, cnn_spec, workers), strict=True):
            bar.update()
            if isinstance(outcome, Skipped):
                log.info("skipped %s: %s", path, outcome)
                result.skipped.append((path, outcome.reason, outcome.detail))
                continue
            stat = path.stat()
            encoding = outcome.encoding
            if embedder is not None and outcome.cnn_input is not None:
                embedder.add(len(result.files), outcome.cnn_input)
            result.files.append(ScannedFile(path, stat.st_size, stat.st_mtime_ns, encoding.width * encoding.height))
            digests.append(encoding.digest)
            variants.append(outcome.variants)
    count = len(result.files)
    digest_index: dict[bytes, int] = {}
    digest_ids = np.array([digest_index.setdefault(d, len(digest_index)) for d in digests], dtype=np.int64)
    variant_matrix = np.array(variants, dtype=np.uint64).reshape(count, 8)
    embeddings = embedder.finish(count) if embedder else None
    result.pairs = list(all_pairs(digest_ids, variant_matrix, embeddings, settings))
    return result
