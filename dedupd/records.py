"""Frozen value types that cross module boundaries (watcher -> pipeline -> store -> reports)."""

from collections.abc import Mapping
from dataclasses import dataclass, field

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
