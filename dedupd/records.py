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


_THUMB_MAGIC = b"T"


def pack_thumb(pixels: np.ndarray) -> bytes:
    """A (h, w) uint8 grey thumbnail as stored: b"T", width and height (uint16 little-endian), the rows."""
    height, width = pixels.shape
    return _THUMB_MAGIC + width.to_bytes(2, "little") + height.to_bytes(2, "little") + pixels.astype(np.uint8).tobytes()


def thumb_pixels(thumb: bytes | None) -> np.ndarray | None:
    """The (h, w) uint8 array of a `pack_thumb` thumbnail; None for none, or the older 32x32 layout (raw
    1,024 bytes: 5 + w*h is never 1,024 for sides of at most 128, so the two layouts cannot be confused)."""
    if not thumb or len(thumb) < 5 or thumb[:1] != _THUMB_MAGIC:
        return None
    width, height = int.from_bytes(thumb[1:3], "little"), int.from_bytes(thumb[3:5], "little")
    if width * height != len(thumb) - 5 or not width or not height:
        return None
    return np.frombuffer(thumb, np.uint8, offset=5).reshape(height, width)


@dataclass(frozen=True, slots=True)
class Encoding:
    """Everything dedupd derives from one decoded image.

    `hashes` maps a hash name ("phash", "ahash", "dhash", "whash", plus any the matcher adds) to a
    64-bit unsigned int; `embedding` is the L2-normalised CNN vector, absent when the CNN is off.
    `capture` is the capture identity from metadata and `thumb` the grey thumbnail (EXIF orientation
    applied, long side 128, `pack_thumb`) the matcher verifies candidate pairs on; both are None in
    records written before they existed, and a record of the 32x32 layout before that holds a thumb
    `thumb_pixels` does not read (no evidence either way until the file changes).
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


# ---- what the store applies and reports (store.py), shared with the catalog and the pipeline


@dataclass(frozen=True, slots=True)
class Removal:
    """The file at `path` is gone; also removes every record under `path/` (a deleted directory)."""

    path: str


@dataclass(frozen=True, slots=True)
class Move:
    """`src` was renamed to `dst` (a file or a whole directory); records keep their encodings and rids."""

    src: str
    dst: str


@dataclass(frozen=True, slots=True)
class Restat:
    """The file at `key.path` still has its record's bytes (same digest: a touch, a copy of the same bytes
    over it) under a new stat identity `key`: the record keeps its rid, encoding, links and ignores."""

    key: FileKey


#: One change a store transaction applies: a new or re-encoded file, a removal, a move, a re-stat.
type StoreChange = FileRecord | Removal | Move | Restat


@dataclass(frozen=True, slots=True)
class Link:
    """Two records matched by `method`: `score` is a hash distance or a CNN similarity."""

    a: int
    b: int
    method: str
    score: float


@dataclass(frozen=True, slots=True)
class Commit:
    """What one committed batch changed, in rid terms, for the index to follow."""

    seq: int
    added: tuple[tuple[int, FileRecord], ...]
    removed: tuple[int, ...]
    moved: tuple[tuple[int, str, str], ...]
    ignored: tuple[tuple[int, int], ...] = ()  # ignored pairs (a < b) of added records, kept from their old rid
