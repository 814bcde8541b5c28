"""The keep policy: which file of a duplicate group a photographer keeps, and why.

One policy for `dedupd scan` (keeper listed first), the daemon's `to-remove` and the review page.
A capture set (`search.sets`: a RAW and its JPEG, one exposure's files) is one unit: it is kept whole or
proposed whole, and a set beats a lone copy. Then, in order, the keeper is the file with
1. the most pixels (as displayed: an EXIF-rotated copy has the same count);
2. the camera's metadata (a maker, model or original capture time: what a messenger or a
   conversion strips);
3. the camera's own format (JPEG, HEIF, ...) over a conversion (PNG, BMP, GIF, WebP, TIFF, PPM);
4. the oldest modification time (the import came before the copies made of it);
5. the smallest path.
A file whose metadata was never read (stored by a version before capture identity) ranks between
a file that has it and one that lacks it on 2 and 3. The file size no longer counts: a PNG
conversion or a re-encode at higher quality is larger than the camera's file.
"""

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from dedupd.records import Capture
from dedupd.search.sets import RAW_FORMATS

#: The policy in one line, as `to-remove` states it.
POLICY = ("keep a capture set (a RAW and its JPEG) whole, and over a lone copy; then the most pixels, "
          "then the file carrying the camera's metadata, then the camera's format over a "
          "conversion, then the oldest mtime, then the first path; never propose files under protected roots")

#: Containers cameras and phones write (RAWs included); anything else Pillow names is a conversion.
CAMERA_FORMATS = frozenset({"JPEG", "MPO", "HEIF", "HEIC", "AVIF"}) | RAW_FORMATS


@dataclass(frozen=True, slots=True)
class Candidate:
    """What the policy looks at for one member of a group."""

    path: str
    pixels: int
    mtime_ns: int
    capture: Capture | None = None
    capture_set: str | None = None  # the key of its capture set (`search.sets`), None for a lone file


def _camera(capture: Capture | None) -> int:
    return 1 if capture is None else (0 if capture.from_camera else 2)


def _format(capture: Capture | None) -> int:
    if capture is None or capture.format is None:
        return 1
    return 0 if capture.format in CAMERA_FORMATS else 2


def rank(candidate: Candidate) -> tuple[int, int, int, int, str]:
    """Sort key, keeper first."""
    c = candidate
    return (-c.pixels, _camera(c.capture), _format(c.capture), c.mtime_ns, c.path)


_REASONS = (
    "a capture set, kept whole",
    "most pixels",
    "carries the camera's metadata",
    "in the camera's format",
    "oldest",
    "first path",
)


def keepers(ordered: Sequence[Candidate]) -> list[Candidate]:
    """The kept members of a group in keep order: the keeper and the rest of its capture set."""
    if not ordered:
        return []
    first = ordered[0]
    return [c for c in ordered if c is first or (first.capture_set is not None and c.capture_set == first.capture_set)]


def choose(members: Sequence[Candidate]) -> tuple[list[Candidate], str]:
    """Members in keep order (the keepers first: the keeper and its capture set) and why the keeper beats the
    first member not kept, in words."""
    size = Counter(c.capture_set for c in members if c.capture_set is not None)

    def key(c: Candidate) -> tuple[int, tuple[int, int, int, int, str]]:
        return -(size[c.capture_set] if c.capture_set is not None else 1), rank(c)

    ordered = sorted(members, key=key)
    kept = keepers(ordered)
    ordered = kept + [c for c in ordered if all(c is not k for k in kept)]
    if len(ordered) == len(kept):
        return ordered, "only member" if len(kept) < 2 else "one capture set"
    first, second = ordered[0], ordered[len(kept)]
    if key(first)[0] != key(second)[0]:
        return ordered, _REASONS[0]
    keeper, runner = rank(first), rank(second)
    step = next((i for i, (x, y) in enumerate(zip(keeper, runner, strict=True)) if x != y), len(keeper) - 1) + 1
    reason = _REASONS[step]
    if step == 1:
        reason += f" ({first.pixels:,} vs {second.pixels:,})"
    elif step == 2 and first.capture is not None:
        camera = " ".join(x for x in (first.capture.model or first.capture.make, first.capture.time) if x)
        reason += f" ({camera})" if camera else ""
    elif step == 3 and first.capture is not None and second.capture is not None:
        reason += f" ({first.capture.format} vs {second.capture.format or 'unknown'})"
    return ordered, reason
