"""The keep policy: which file of a duplicate group a photographer keeps, and why.

One policy for `dedupd scan` (keeper listed first), the daemon's `to-remove` and the review page.
In order, the keeper is the file with
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

from collections.abc import Sequence
from dataclasses import dataclass

from dedupd.records import Capture

#: The policy in one line, as `to-remove` states it.
POLICY = ("keep the most pixels, then the file carrying the camera's metadata, then the camera's format over a "
          "conversion, then the oldest mtime, then the first path; never propose files under protected roots")

#: Containers cameras and phones write; anything else Pillow names is a conversion.
CAMERA_FORMATS = frozenset({"JPEG", "MPO", "HEIF", "HEIC", "AVIF", "DNG"})


@dataclass(frozen=True, slots=True)
class Candidate:
    """What the policy looks at for one member of a group."""

    path: str
    pixels: int
    mtime_ns: int
    capture: Capture | None = None


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
    "most pixels",
    "carries the camera's metadata",
    "in the camera's format",
    "oldest",
    "first path",
)


def choose(members: Sequence[Candidate]) -> tuple[list[Candidate], str]:
    """Members in keep order (keeper first) and why the keeper beats the next one, in words."""
    ordered = sorted(members, key=rank)
    if len(ordered) < 2:
        return ordered, "only member"
    keeper, runner = rank(ordered[0]), rank(ordered[1])
    step = next(i for i, (x, y) in enumerate(zip(keeper, runner, strict=True)) if x != y)
    reason = _REASONS[step]
    first = ordered[0]
    if step == 0:
        reason += f" ({first.pixels:,} vs {ordered[1].pixels:,})"
    elif step == 1 and first.capture is not None:
        camera = " ".join(x for x in (first.capture.model or first.capture.make, first.capture.time) if x)
        reason += f" ({camera})" if camera else ""
    elif step == 2 and first.capture is not None and ordered[1].capture is not None:
        reason += f" ({first.capture.format} vs {ordered[1].capture.format or 'unknown'})"
    return ordered, reason
