"""dedupd's own duplicate rule: exact digest, orientation-aware pHash confirmed by the CNN, CNN alone.

Owns the fusion of the three kinds of evidence into one decision per pair and the default
thresholds, chosen on the bench corpora (BENCHMARKS.md, "Matcher"): with the default CNN
(sscd-distilled) a pair is a duplicate when

* the files are byte-identical (`exact`), or
* their orientation-aware pHash distance is <= `hash_threshold` bits AND the CNN agrees at
  >= `hash_confirm_similarity` (`phash`; the CNN confirmation is what rejects the black-corner
  look-alikes that 25-degree rotations of different photos produce), or
* the CNN similarity alone is >= `cnn_min_similarity` (`cnn`: crops, rotations, re-edits).

Without the CNN only `exact` and a strict `hash_only_threshold` remain. The daemon and
`dedupd scan` both decide through `decide`, so the same files give the same groups. Pure:
arrays in, pairs out.

Two tiers. A pair the rule accepts is a *duplicate* (the same capture) unless the evidence says
it is a different capture of the same scene, a *similar* pair (`tier`):

1. byte-identical files are duplicates, whatever else;
2. metadata (`capture_verdict`): two capture times that differ (to the sub-second where both
   have it), two ImageUniqueIDs, cameras (make, model, body serial) or burst ids that differ mean
   two captures; the same unique id, or the same time with the same sub-seconds, means one;
   metadata missing on either side (stripped, a screenshot) is no evidence;
3. pixels (`search.verify`): where metadata is silent, the pair's thumbnails must map onto each other
   by one affine transform with nothing changed after alignment (a copy, however resized, cropped,
   flipped or re-toned); a pair that fails (a pan, a stereo or viewpoint pair, a burst of a static
   scene where something moved) is two captures. Without thumbnails of the current layout on both
   sides (records of an older version, until the file changes) the rule's verdict stands.
"""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import numpy as np

from dedupd.records import Capture, thumb_pixels
from dedupd.search.verify import COPY, KeypointCache, Verification, Verifier

#: How many (row, column) cells one chunk of the all-pairs scan may hold: bounds memory at ~64 MiB.
PAIR_CHUNK_CELLS = 1 << 22


@dataclass(frozen=True, slots=True)
class MatcherSettings:
    """Thresholds of the fusion rule (module docstring). Defaults are the measured ones."""

    hash_threshold: int = 10
    hash_confirm_similarity: float = 0.5
    cnn_min_similarity: float = 0.62
    hash_only_threshold: int = 2
    cnn_enabled: bool = True

    @classmethod
    def defaults(cls) -> "MatcherSettings":
        return cls()

    def with_threshold(self, bits: int) -> "MatcherSettings":
        """Override the hash threshold that applies in this mode (confirmed or hash-only)."""
        return replace(self, hash_threshold=bits) if self.cnn_enabled else replace(self, hash_only_threshold=bits)

    def with_min_similarity(self, similarity: float) -> "MatcherSettings":
        return replace(self, cnn_min_similarity=similarity)

    def without_cnn(self) -> "MatcherSettings":
        return replace(self, cnn_enabled=False)


DUPLICATE, SIMILAR = "duplicate", "similar"


@dataclass(frozen=True, slots=True)
class PairMatch:
    """Two files (by index) the rule accepts, how, the score of the deciding evidence, and the tier:
    DUPLICATE, or SIMILAR with `evidence` saying what showed two captures."""

    first: int
    second: int
    method: str
    score: int | float
    tier: str = DUPLICATE
    evidence: str = ""


def _instant(capture: Capture) -> tuple[datetime, bool] | None:
    """The capture time (UTC when the offset is known) and whether it has sub-seconds."""
    if capture.time is None:
        return None
    try:
        when = datetime.strptime(capture.time[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None
    digits = "".join(c for c in capture.subsec or "" if c.isdigit())[:6]
    if digits:
        when += timedelta(microseconds=int(digits.ljust(6, "0")))
    if capture.offset:
        try:
            offset = datetime.strptime(capture.offset.strip(), "%z").utcoffset()
        except ValueError:
            offset = None
        if offset is not None:
            when -= offset
    return when, bool(digits)


def capture_verdict(a: Capture | None, b: Capture | None) -> tuple[str | None, str]:
    """What metadata says about two files: (DUPLICATE | SIMILAR | None, the reason in words)."""
    if a is None or b is None:
        return None, ""
    for name, label in (("unique_id", "ImageUniqueID"), ("burst_id", "burst id"), ("serial", "camera serial"),
                        ("make", "camera make"), ("model", "camera model")):  # fmt: skip
        x, y = getattr(a, name), getattr(b, name)
        if x and y and x != y:
            return SIMILAR, f"{label} {x} vs {y}"
    if a.unique_id and a.unique_id == b.unique_id:
        return DUPLICATE, f"same ImageUniqueID {a.unique_id}"
    ta, tb = _instant(a), _instant(b)
    if ta is None or tb is None:
        return None, ""
    (when_a, sub_a), (when_b, sub_b) = ta, tb
    if not (a.offset and b.offset):  # one offset unknown: compare the local times as written
        local_a, local_b = _instant(replace(a, offset=None)), _instant(replace(b, offset=None))
        assert local_a is not None and local_b is not None
        when_a, when_b = local_a[0], local_b[0]
    if not (sub_a and sub_b):  # whole seconds only
        when_a, when_b = when_a.replace(microsecond=0), when_b.replace(microsecond=0)
    apart = when_a != when_b
    shown = f"{a.time}.{a.subsec or ''} vs {b.time}.{b.subsec or ''}".replace(". ", " ")
    if apart:
        return SIMILAR, f"capture time {shown}"
    if sub_a and sub_b:
        return DUPLICATE, f"same capture time {a.time}.{a.subsec}"
    return None, ""


def identity(capture: Capture | None) -> Capture | None:
    """The part of a capture identity that can tell two captures apart (None when it has none): what
    `search.groups.partition` keeps groups apart by, for files that were never compared."""
    if capture is None or not (capture.time or capture.unique_id or capture.burst_id):
        return None
    return replace(capture, format=None)


def different_captures(a: object, b: object) -> bool:
    """Do two `identity` values name different captures (`capture_verdict` says SIMILAR)."""
    return isinstance(a, Capture) and isinstance(b, Capture) and capture_verdict(a, b)[0] == SIMILAR


def tier(exact: bool, capture: tuple[str | None, str], check: Verification | None) -> tuple[str, str]:
    """The tier of a pair the rule accepts (module docstring) and the evidence that decided it."""
    if exact:
        return DUPLICATE, "same bytes"
    verdict, reason = capture
    if verdict is not None:
        return verdict, reason
    if check is None:
        return DUPLICATE, ""
    if check.verdict == COPY:
        return DUPLICATE, f"pixels verified: {check.describe()}"
    return SIMILAR, f"pixels not one capture: {check.describe()}"


type Side = tuple[Capture | None, bytes | None]  # what the tiers read of one file: capture identity, thumbnail


def tiers(
    methods: Sequence[str], first: Sequence[Side], second: Sequence[Side], cache: KeypointCache | None = None
) -> list[tuple[str, str]]:
    """(tier, evidence) of each pair (first[k], second[k]) the rule accepted by `methods[k]`.

    Every pair but byte copies is verified on its thumbnails (`search.verify`) where metadata is
    silent and both files have one; each distinct thumbnail's keypoints are computed once per `cache`
    (None: once per call; the daemon's catalog keeps one across its commit batches)."""
    verifier = Verifier(cache=cache)
    out = []
    for method, a, b in zip(methods, first, second, strict=True):
        same = method == "exact"
        verdict = (None, "") if same else capture_verdict(a[0], b[0])
        check = None
        if not same and verdict[0] is None:
            check = _verify(verifier, thumb_pixels(a[1]), thumb_pixels(b[1]))
        out.append(tier(same, verdict, check))
    return out


def _verify(verifier: Verifier, a: np.ndarray | None, b: np.ndarray | None) -> Verification | None:
    """The verification of two thumbnails in a fixed order (the brightness fit and the warp are one-way, the
    verdict must not depend on which file came first: the daemon meets pairs in arrival order, the scan in
    path order); None when either is missing or has too little structure to tell (`Verifier.verify`)."""
    if a is None or b is None:
        return None
    if (a.shape, a.tobytes()) > (b.shape, b.tobytes()):
        a, b = b, a
    return verifier.verify(a, b)


def evidence_of(a: Side, b: Side, method: str | None) -> dict[str, object]:
    """Every piece of tier evidence about one pair the rule accepted by `method` (None: not accepted), for
    `--explain`: metadata verdict, the pixel verification (shown for any pair with thumbnails)."""
    exact = method == "exact"
    verdict, reason = (None, "") if exact else capture_verdict(a[0], b[0])
    x, y = thumb_pixels(a[1]), thumb_pixels(b[1])
    both = x is not None and y is not None
    check = _verify(Verifier(), x, y)
    decided, why = tier(exact, (verdict, reason), check if method is not None and verdict is None else None)
    return {
        "metadata": verdict and ("same capture" if verdict == DUPLICATE else "different captures"),
        "metadata_detail": reason or ("missing on one side" if a[0] is None or b[0] is None else "silent"),
        "pixels": _pixel_words(check, both),
        "pixel_detail": None if check is None else check.describe(),
        "tier": decided,
        "tier_evidence": why,
    }


def _pixel_words(check: Verification | None, both: bool) -> str | None:
    """`--explain`'s pixel verdict: one capture, not one capture, no evidence (too little structure), None
    (no thumbnail)."""
    if check is None:
        return "no evidence" if both else None
    return "one capture" if check.verdict == COPY else "not one capture"


def oriented_distances(variants: np.ndarray, hashes: np.ndarray) -> np.ndarray:
    """(rows, N) distances: for each query row, min over its 8 orientation variants vs every hash.

    Sign-hash variants are exact bit operations, so this equals the smallest distance over every
    rotation and mirror of either file: symmetric, whichever file is the query.
    """
    distances = np.bitwise_count(variants[:, 0, None] ^ hashes[None, :])
    for k in range(1, variants.shape[1]):
        np.minimum(distances, np.bitwise_count(variants[:, k, None] ^ hashes[None, :]), out=distances)
    return distances


def decide(
    exact: np.ndarray, distances: np.ndarray, similarities: np.ndarray | None, settings: MatcherSettings
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vectorised fusion over a block of pairs: (is_exact, is_phash, is_cnn), mutually exclusive."""
    if similarities is None or not settings.cnn_enabled:
        by_hash = ~exact & (distances <= settings.hash_only_threshold)
        return exact, by_hash, np.zeros_like(exact)
    by_hash = ~exact & (distances <= settings.hash_threshold) & (similarities >= settings.hash_confirm_similarity)
    by_cnn = ~exact & ~by_hash & (similarities >= settings.cnn_min_similarity)
    return exact, by_hash, by_cnn


def all_pairs(
    digest_ids: np.ndarray,
    variants: np.ndarray,
    embeddings: np.ndarray | None,
    settings: MatcherSettings,
) -> Iterator[PairMatch]:
    """Every duplicate pair (i < j) among N encodings, in row-chunks so memory stays O(N).

    `digest_ids` (N,) equal for byte-identical files; `variants` (N, 8) uint64 sign-hash variants
    (column 0 = the file as stored after EXIF orientation); `embeddings` (N, D) L2-normalised or None.
    """
    count = len(digest_ids)
    hashes = variants[:, 0]
    rows_per_chunk = max(1, PAIR_CHUNK_CELLS // max(count, 1))
    for start in range(0, count, rows_per_chunk):
        stop = min(count, start + rows_per_chunk)
        exact = digest_ids[start:stop, None] == digest_ids[None, :]
        distances = oriented_distances(variants[start:stop], hashes)
        similarities = embeddings[start:stop] @ embeddings.T if embeddings is not None else None
        upper = np.arange(count)[None, :] > np.arange(start, stop)[:, None]
        is_exact, is_phash, is_cnn = decide(exact, distances, similarities, settings)
        for method, mask in (("exact", is_exact), ("phash", is_phash), ("cnn", is_cnn)):
            for row, col in zip(*np.nonzero(mask & upper), strict=True):
                if method == "cnn":
                    score: int | float = round(float(similarities[row, col]), 4)  # type: ignore[index]
                else:
                    score = int(distances[row, col])
                yield PairMatch(start + int(row), int(col), method, score)


_METHOD_STRENGTH = {"exact": 0, "phash": 1, "cnn": 2}


def evidence_rank(method: str, score: float) -> tuple[int, float]:
    """Sort key of a match, strongest first: exact, then smaller distance, then higher similarity."""
    return (_METHOD_STRENGTH.get(method, len(_METHOD_STRENGTH)), -score if method == "cnn" else score)


def stronger(a: PairMatch, b: PairMatch) -> bool:
    """Is `a` stronger evidence than `b`."""
    return evidence_rank(a.method, a.score) < evidence_rank(b.method, b.score)


