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
class Encoding:
    """Everything dedupd derives from one decoded image.

    `hashes` maps a hash name ("phash", "ahash", "dhash", "whash", plus any the matcher adds) to a
    64-bit unsigned int; `embedding` is the L2-normalised CNN vector, absent when the CNN is off.
    """

    digest: bytes
    width: int
    height: int
    hashes: Mapping[str, int] = field(default_factory=dict)
    embedding: np.ndarray | None = None


@dataclass(frozen=True, slots=True)
class FileRecord:
    """What the store keeps per path: either an encoding or the reason there is none."""

    key: FileKey
    encoding: Encoding | None = None
    skip: SkipReason | None = None


@dataclass(frozen=True, slots=True)
class Match:
    """One near or exact duplicate found for a file: hash methods give a distance, the CNN a similarity."""

    path: str
    method: str
    distance: int | None = None
    similarity: float | None = None


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
