"""Capture sets: the files one exposure left on a card, which are one unit, never duplicates of each other.

Why: a camera set to RAW+JPEG writes `IMG_0042.CR3` and `IMG_0042.JPG`; a phone writes `IMG_0042.HEIC`
beside an edited `IMG_0042.JPG`. Photographers keep both on purpose, so dedupd shows them together, never
proposes one for removal against the other, and matches them as one against the rest of the library (a
third JPEG copy elsewhere is a duplicate of the set). Files are of one set when they are in one folder,
share a basename (the name up to its first dot, case-insensitively: `IMG_0042.CR3` and `img_0042.jpg`) and
hold what a camera writes of one exposure (a RAW and a rendering of it, or a HEIF and a JPEG: `photo.jpg`
and its conversion `photo.png` are not a set), or when they are in one folder, one of them a RAW, and carry
the same capture identity (a RAW and the JPEG a camera numbered differently). A copy elsewhere is never of
the set, even with the same EXIF: that is what a duplicate is. Sidecars and motion files are not members: they
belong to their image (`dedupd.companions`). Pure: paths, formats and identities in, set keys out.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping

from dedupd.companions import basename_key

#: Containers Capture.format names for camera RAWs (imaging.raw).
RAW_FORMATS = frozenset({"DNG", "CR2", "CR3", "NEF", "ARW", "PEF", "RAF", "ORF", "RW2", "RAW"})
_HEIF = frozenset({"HEIF", "HEIC", "AVIF"})
_JPEG = frozenset({"JPEG", "MPO"})


def one_exposure(formats: list[str | None]) -> bool:
    """Whether files of one basename in one folder are what a camera writes of one exposure (pure): a RAW
    beside anything, or a HEIF beside a JPEG."""
    kinds = set(formats)
    return bool(kinds & RAW_FORMATS) and len(formats) > 1 or bool(kinds & _HEIF and kinds & _JPEG)


def capture_sets(
    paths: Mapping[int, str],
    formats: Mapping[int, str | None],
    identities: Mapping[int, Hashable] | None = None,
) -> dict[int, int]:
    """node -> its set's smallest node, for every node of a set of >= 2 among `paths` (lone files are absent).

    `formats` are Capture.format; `identities` (`search.matcher.identity`) add the RAW + same-identity rule.
    """
    parent: dict[int, int] = {}

    def root(node: int) -> int:
        while parent.get(node, node) != node:
            node = parent[node]
        return node

    def join(a: int, b: int) -> None:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
            parent.setdefault(min(ra, rb), min(ra, rb))

    by_name: dict[tuple[str, str], list[int]] = {}
    for node in sorted(paths):
        by_name.setdefault(basename_key(paths[node]), []).append(node)
    for nodes in by_name.values():
        if len(nodes) > 1 and one_exposure([formats.get(n) for n in nodes]):
            for node in nodes[1:]:
                join(nodes[0], node)
    if identities is not None:  # a RAW and the one rendering beside it of its capture (the first by node)
        buckets: dict[tuple[str, Hashable], list[int]] = {}
        for node in sorted(paths):
            if (ident := identities.get(node)) is not None:
                buckets.setdefault((os.path.dirname(paths[node]), ident), []).append(node)
        for nodes in buckets.values():
            raws = [n for n in nodes if formats.get(n) in RAW_FORMATS]
            others = [n for n in nodes if formats.get(n) not in RAW_FORMATS]
            if raws and others:
                join(raws[0], others[0])
    return {node: root(node) for node in parent}
