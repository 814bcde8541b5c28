"""Frozen value types that cross module boundaries (watcher -> pipeline -> store -> reports)."""

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from dedupd.errors import SkipReason


@dataclass(frozen=True, slots=True)
class FileKey:
    """Identity of a file on disk at one moment: a changed size, mtime or inode means re-encode."""

    path: str
    dev: int
    inode: int
    size: int
    mtime_ns: int


@dataclass(frozen=True, slots=True)
class Capture:
    """Who took a photo and when, as its metadata says (`imaging.capture`); None fields were absent.

    `time` is EXIF DateTimeOriginal as written ("YYYY:MM:DD HH:MM:SS"), `subsec` its SubSecTimeOriginal
    digits, `offset` its OffsetTimeOriginal ("+02:00"); `unique_id` is ImageUniqueID, `burst_id` a phone's
    burst identifier (XMP); `format` the container as Pillow names it ("JPEG", "PNG", ...).
    """

    format: str | None = None
    time: str | None = None
    subsec: str | None = None
    offset: str | None = None
    make: str | None = None
    model: str | None = None
    serial: str | None = None
    unique_id: str | None = None
    burst_id: str | None = None

    @property
    def from_camera(self) -> bool:
        """Does the file carry what a camera writes (a maker, a model or an original capture time)."""
        return bool(self.make or self.model or self.time)


@dataclass(frozen=True, slots=True)
class Encoding:
    """Everything dedupd derives from one decoded image.

    `hashes` maps a hash name ("phash", "ahash", "dhash", "whash", plus any the matcher adds) to a
    64-bit unsigned int; `embedding` is the L2-normalised CNN vector, absent when the CNN is off.
    `capture` is the capture identity from metadata and `thumb` the 32x32 grey thumbnail (EXIF
    orientation applied, row-major bytes) the matcher verifies aligned copies on; both are None in
    records written before they existed (no evidence).
    """

    digest: bytes
    width: int
    height: int
    hashes: Mapping[str, int] = field(default_factory=dict)
    embedding: np.ndarray | None = None
    capture: Capture | None = None
    thumb: bytes | None = None


@dataclass(frozen=True, slots=True)
class FileRecord:
    """What the store keeps per path: either an encoding or the reason there is none."""

    key: FileKey
    encoding: Encoding | None = None
    skip: SkipReason | None = None


@dataclass(frozen=True, slots=True)
class Match:
    """One near or exact duplicate found for a file: hash methods give a distance, the CNN a similarity.

    `tier` is "duplicate" (the same capture) or "similar" (a different capture of the same scene)."""

    path: str
    method: str
    distance: int | None = None
    similarity: float | None = None
    tier: str = "duplicate"


class ChangeKind(StrEnum):
    """What the watcher saw. File kinds carry a path; the others concern a whole root or subtree."""

    CREATED = "created"  # a file appeared (creat, synthetic event, move-in from outside)
    MODIFIED = "modified"  # data written, file maybe still open
    CLOSED = "closed"  # closed after writing: safe to encode now
    MOVED = "moved"  # file renamed inside the roots: `path` -> `dest`
    DELETED = "deleted"  # file removed or moved out of every root
    DIR_MOVED = "dir_moved"  # directory renamed inside the roots: re-key everything under it
    DIR_DELETED = "dir_deleted"  # directory removed or moved out of every root
    RESCAN = "rescan"  # events were or may have been lost under `path`: reconcile it with the store
    ROOT_OFFLINE = "root_offline"  # the root vanished or stopped answering: keep its records, report nothing
    ROOT_ONLINE = "root_online"  # the root is back: reconcile it


@dataclass(frozen=True, slots=True)
class Change:
    """One event from the watcher to the pipeline; paths are absolute."""

    kind: ChangeKind
    path: str
    root: str
    dest: str | None = None
    reason: str = ""
