"""The one rule of which files belong to an image by their names: sidecars and Live Photo motion files.

A sidecar is an `.xmp` or `.aae` (any case). One named after an image's whole name (`IMG_1.CR3.xmp` of
`IMG_1.CR3`) is that image's own; one named after the basename alone (`IMG_1.xmp`, Apple's `IMG_1.AAE`) is
shared by every image of that basename in its folder (a RAW+JPEG pair has one). A Live Photo's motion file is
an `.mov` or `.mp4` beside a still (`.heic`, `.heif`, `.jpg`, `.jpeg`) of its basename; it is shared by the
stills of that basename (a phone's HEIC and its JPEG rendering are one Live Photo). Basenames compare as
`basename_key` does (one folder, the name up to its first dot, case-insensitively), the rule capture sets
use too. Pure: names in, names out (the one question about the filesystem, `exists`, is the caller's).
Used by the store (its index of companions by basename), the scan, the pipeline and the user's actions.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from dedupd.errors import SkipReason

#: Sidecar names end so (any case): `IMG_1.xmp`, `IMG_1.CR3.xmp`, Apple's `IMG_1.AAE`.
SIDECAR_SUFFIXES = (".xmp", ".aae")
#: A Live Photo's motion file ends so, beside a still of its basename ending in one of STILL_SUFFIXES.
MOTION_SUFFIXES = (".mov", ".mp4")
STILL_SUFFIXES = (".heic", ".heif", ".jpg", ".jpeg")


@dataclass(frozen=True, slots=True)
class Companion:
    """A file that belongs to an image: its `path`, `kind` (SIDECAR or MOTION), and whether it is `shared` by
    every image of its basename (named by the basename alone) rather than the image's own."""

    path: str
    kind: SkipReason
    shared: bool

    def document(self) -> dict[str, object]:
        return {"path": self.path, "kind": self.kind.value, "shared": self.shared}


def basename_key(path: str) -> tuple[str, str]:
    """(folder, basename up to the first dot, lower case): what names one exposure's files (pure)."""
    directory, name = os.path.split(path)
    stem = name.split(".", 1)[0] if not name.startswith(".") else name
    return directory, stem.lower()


def named_like_companion(path: str) -> bool:
    """Whether the name could be a sidecar's or a motion file's (a motion file needs its still too)."""
    return path.lower().endswith(SIDECAR_SUFFIXES + MOTION_SUFFIXES)


def companion_kind(path: str, exists: Callable[[str], bool] = os.path.exists) -> SkipReason | None:
    """SIDECAR or MOTION when the file at `path` belongs to an image by its name (a sidecar; a video beside
    a still of its basename, as a Live Photo's), else None. `exists` is asked about the few possible stills."""
    lower = path.lower()
    if lower.endswith(SIDECAR_SUFFIXES):
        return SkipReason.SIDECAR
    if lower.endswith(MOTION_SUFFIXES):
        stem = path[: path.rfind(".")]
        for suffix in STILL_SUFFIXES:
            if exists(stem + suffix) or exists(stem + suffix.upper()):
                return SkipReason.MOTION
    return None


def attached(image: str, candidates: Iterable[str]) -> list[Companion]:
    """Of `candidates` (any paths; those of the image's folder and basename count), the files that belong to
    the image at `image` by the rule above, sorted by path. A companion-named `image` has none."""
    if named_like_companion(image):
        return []
    key, name = basename_key(image), os.path.basename(image).lower()
    still = name.endswith(STILL_SUFFIXES)
    found = []
    for path in sorted(set(candidates)):
        if path == image or basename_key(path) != key:
            continue
        lower = os.path.basename(path).lower()
        described = lower[: lower.rfind(".")]  # the name a sidecar describes, a motion file's basename
        if lower.endswith(SIDECAR_SUFFIXES) and described in (name, key[1]):
            found.append(Companion(path, SkipReason.SIDECAR, described != name))
        elif lower.endswith(MOTION_SUFFIXES) and still and described == key[1]:
            found.append(Companion(path, SkipReason.MOTION, True))
    return found
