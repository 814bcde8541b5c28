"""Thumbnails for the review page: the desktop's own (freedesktop thumbnail cache) when valid, else made here.

`desktop_thumbnail` looks up `$XDG_CACHE_HOME/thumbnails/{xx-large,x-large,large,normal}/<md5 of the file
URI>.png` and accepts one only when its `Thumb::URI` and `Thumb::MTime` say it was made from this file as
it is now (the freedesktop Thumbnail Managing Standard). `make_thumbnail` decodes with the project's limits
(reduced-size JPEG decode, EXIF orientation applied, alpha on white) and returns JPEG bytes; it runs in the
encode pool's workers, never in the daemon or the review server's own process.
"""

import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from PIL import Image, ImageOps

from dedupd.imaging.decode import DEFAULT_MAX_PIXELS, _to_display_rgb, open_image

#: Sizes of the freedesktop cache's folders, largest first (a thumbnail at least as large as asked is used).
_DESKTOP_FLAVOURS = (("xx-large", 1024), ("x-large", 512), ("large", 256), ("normal", 128))


@dataclass(frozen=True, slots=True)
class Thumbnail:
    """An encoded thumbnail and its media type."""

    data: bytes
    media_type: str


def file_uri(path: str) -> str:
    return "file://" + quote(os.fsencode(path), safe="/")


def desktop_thumbnail(path: str, mtime_s: int, size: int, cache_home: Path) -> Thumbnail | None:
    """The desktop's cached thumbnail of `path` (at least `size` px), if it is valid for this mtime."""
    uri = file_uri(path)
    name = hashlib.md5(uri.encode("ascii"), usedforsecurity=False).hexdigest() + ".png"
    for flavour, side in _DESKTOP_FLAVOURS:
        if side < size and flavour != "xx-large":
            continue
        candidate = cache_home / "thumbnails" / flavour / name
        try:
            data = candidate.read_bytes()
            with Image.open(io.BytesIO(data)) as image:
                info = getattr(image, "text", {}) or {}
        except (OSError, ValueError, SyntaxError):
            continue
        if info.get("Thumb::URI") == uri and info.get("Thumb::MTime") == str(mtime_s):
            return Thumbnail(data, "image/png")
    return None


def make_thumbnail(path: str, size: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> Thumbnail:
    """A JPEG of `path` fitting `size` x `size`, upright; raises Skipped for what cannot be decoded."""
    with open_image(path, max_pixels=max_pixels) as image:
        if image.format == "JPEG":
            image.draft("RGB", (size, size))  # reduced IDCT: a 24 MP photo decodes at 1/8 scale
        upright = ImageOps.exif_transpose(image)
        rgb = _to_display_rgb(upright)
        rgb.thumbnail((size, size), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        rgb.save(out, "JPEG", quality=85)
    return Thumbnail(out.getvalue(), "image/jpeg")
