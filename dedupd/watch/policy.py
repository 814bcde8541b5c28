"""Which paths under a root dedupd looks at: `RootSpec` (one root's configuration) and `PathPolicy` (its globs,
hidden files, symlinks and recursion), the one rule every part of the watcher, `scan()` and the walkers apply."""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

#: Synology thumbnails, desktop thumbnail caches, per-user trash, Synology/QNAP recycle bins, git metadata.
DEFAULT_EXCLUDE: tuple[str, ...] = ("@eaDir", ".thumbnails", ".Trash-*", "#recycle", ".git")
#: Seconds between two stat snapshots of a polled root.
DEFAULT_POLL_INTERVAL_S = 60.0


@dataclass(frozen=True, slots=True)
class RootSpec:
    """One watched directory and its policy (the daemon converts its configuration to this).

    `include`: file globs, empty = every file; a glob without "/" matches the file name, one with "/" the path
    relative to the root (fnmatch: `*` also matches "/"); matched case-insensitively (`*.jpg` takes IMG_1.JPG).
    Directories are never pruned by `include`. `exclude`: globs, matched exactly; without "/" against every path
    component (so "@eaDir" excludes such directories at any depth), with "/" against the relative path of each
    ancestor. An excluded directory gets no inotify watch and is never walked. `exclude` replaces the defaults:
    extend DEFAULT_EXCLUDE to keep them. `follow_symlinks=False` ignores symlinks below the root (files and
    directories: changes to their targets would go unseen anyway); the root path itself may be a symlink.
    """

    path: str
    recursive: bool = True
    polling: bool | Literal["auto"] = "auto"
    poll_interval_s: float = DEFAULT_POLL_INTERVAL_S
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = DEFAULT_EXCLUDE
    follow_symlinks: bool = False

    def __post_init__(self) -> None:
        if not os.path.isabs(self.path):
            raise ValueError(f"root path must be absolute: {self.path!r}")
        if self.polling not in (True, False, "auto"):
            raise ValueError(f"polling must be true, false or 'auto', not {self.polling!r}")
        if not self.poll_interval_s > 0:
            raise ValueError(f"poll_interval_s must be positive, not {self.poll_interval_s!r}")
        object.__setattr__(self, "path", os.path.normpath(self.path))
        object.__setattr__(self, "include", tuple(self.include))
        object.__setattr__(self, "exclude", tuple(self.exclude))

    @classmethod
    def of(cls, root: object) -> RootSpec:
        """A RootSpec from any object with these attributes (missing ones take the defaults)."""
        if isinstance(root, RootSpec):
            return root
        return cls(**{name: getattr(root, name) for name in cls.__dataclass_fields__ if hasattr(root, name)})



def _compile(patterns: Sequence[str], flags: int = 0) -> re.Pattern[str] | None:
    return re.compile("|".join(fnmatch.translate(p) for p in patterns), flags) if patterns else None


def _split(patterns: Sequence[str]) -> tuple[list[str], list[str]]:
    """Name globs (no "/") and relative-path globs (leading/trailing "/" dropped)."""
    names = [p for p in patterns if "/" not in p.strip("/")]
    paths = [p.strip("/") for p in patterns if "/" in p.strip("/")]
    return names, paths


class PathPolicy:
    """Which paths under one root dedupd looks at; `root` is the prefix the paths it is asked about carry."""

    def __init__(self, spec: RootSpec, root: str | None = None) -> None:
        self.root = root if root is not None else spec.path
        self._prefix = self.root if self.root.endswith("/") else self.root + "/"
        self.recursive = spec.recursive
        self.follow_symlinks = spec.follow_symlinks
        exclude_names, exclude_paths = _split(spec.exclude)
        self._exclude_name = _compile(exclude_names)
        self._exclude_path = _compile(exclude_paths)
        include_names, include_paths = _split(spec.include)
        self._include = bool(spec.include)
        self._include_name = _compile(include_names, re.IGNORECASE)
        self._include_path = _compile(include_paths, re.IGNORECASE)

    def relative(self, path: str) -> str | None:
        """`path` relative to the root, None unless strictly below it."""
        return path[len(self._prefix) :] if path.startswith(self._prefix) and len(path) > len(self._prefix) else None

    def _excluded(self, relative: str) -> bool:
        parts = relative.split("/")
        by_name, by_path = self._exclude_name, self._exclude_path
        if by_name is not None and any(by_name.match(part) for part in parts):
            return True
        return by_path is not None and any(by_path.match("/".join(parts[:n])) for n in range(1, len(parts) + 1))

    def keeps_dir(self, path: str) -> bool:
        """A directory strictly below the root whose files belong to it."""
        relative = self.relative(path)
        return relative is not None and self.recursive and not self._excluded(relative)

    def keeps_file(self, path: str) -> bool:
        relative = self.relative(path)
        if relative is None or ("/" in relative and not self.recursive):
            return False
        name = relative.rsplit("/", 1)[-1]
        if name.startswith(".") or self._excluded(relative):
            return False
        if not self._include:
            return True
        return bool(self._include_name and self._include_name.match(name)) or bool(
            self._include_path and self._include_path.match(relative)
        )

    def keeps_node(self, path: str, *, is_link: bool, is_dir: Callable[[], bool]) -> bool:
        """The one rule for a path on disk, whoever met it (the walk, a polling snapshot, a watch, a live
        event): a symlink only when `follow_symlinks`, then `keeps_dir` or `keeps_file`. `is_dir` is asked
        only for an entry that passes the symlink rule."""
        if is_link and not self.follow_symlinks:
            return False
        return self.keeps_dir(path) if is_dir() else self.keeps_file(path)

    def keeps_entry(self, entry: os.DirEntry[str]) -> bool:
        """A directory entry worth walking or reporting (`keeps_node` on what the listing says)."""
        return self.keeps_node(entry.path, is_link=entry.is_symlink(),
                               is_dir=lambda: entry_is_dir(entry, self.follow_symlinks))

    def keeps_live_file(self, path: str) -> bool:
        """A file named by a live event that still exists: `keeps_node` on what `lstat` says now, so a
        symlink made while the daemon runs is ignored exactly as the scan ignores it."""
        return self.keeps_node(path, is_link=os.path.islink(path), is_dir=lambda: False)


def entry_is_dir(entry: os.DirEntry[str], follow_symlinks: bool) -> bool:
    try:
        return entry.is_dir(follow_symlinks=follow_symlinks)
    except OSError:
        return False
