"""JPEG XL reading for Pillow through imagecodecs' libjxl (BSD-3-Clause): the one JPEG XL reader.

Why not a Pillow plugin from PyPI: the one with wheels (pillow-jxl-plugin) is GPL-3.0-or-later, which would put a
bundle of dedupd's default install under the GPL's terms; imagecodecs is already a dependency (PNG decode).
Registering it (importing this module) lets `Image.open` read a bare codestream and the ISO-BMFF container alike,
so every Pillow user (the matcher's decode, the review page's thumbnails) reads JPEG XL the same way.

Metadata: the container's `Exif` and `xml ` boxes (and their Brotli-compressed `brob` forms) become
`info["exif"]` and `info["xmp"]`, where `getexif()` and the capture identity (imaging.capture) read them.
Orientation: in JPEG XL the codestream's orientation is the one that counts (the format's spec; libjxl's encoder
moves a JPEG's EXIF orientation there when it converts one), and libjxl applies it while decoding, so the image
is upright as opened and the size is the upright one; the Exif box's Orientation tag is then reset to 1 so that
no caller turns the pixels a second time. A cut or corrupt file fails in `load()` with libjxl's error, which the
decode layer turns into a counted skip.
"""

from __future__ import annotations

from typing import Any

import imagecodecs
import numpy as np
from PIL import ExifTags, Image, ImageFile

FORMAT = "JXL"
_CODESTREAM = b"\xff\x0a"
_CONTAINER = b"\x00\x00\x00\x0cJXL \r\n\x87\n"
#: Image modes by samples per pixel of the decoded 8-bit array.
_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}


def _accept(prefix: bytes) -> bool:
    return prefix[:2] == _CODESTREAM or prefix[:12] == _CONTAINER


def _boxes(data: bytes) -> dict[bytes, bytes]:
    """The container's metadata boxes by type (`Exif`, `xml `; a `brob` box decompressed under its inner type);
    empty for a bare codestream. A box running past the end is left out (the decoder reports the cut)."""
    found: dict[bytes, bytes] = {}
    offset = 0
    while data[:12] == _CONTAINER and offset + 8 <= len(data):
        size, kind, start = int.from_bytes(data[offset:offset + 4], "big"), data[offset + 4:offset + 8], offset + 8
        if size == 1:
            size, start = int.from_bytes(data[offset + 8:offset + 16], "big"), offset + 16
        end = len(data) if size == 0 else offset + size
        if end > len(data) or end < start:
            break
        body = data[start:end]
        if kind == b"brob" and len(body) > 4:
            kind, body = body[:4], bytes(imagecodecs.brotli_decode(body[4:]))
        if kind in (b"Exif", b"xml ") and kind not in found:
            found[kind] = body
        if size == 0:
            break
        offset = end
    return found


class JpegXlImageFile(ImageFile.ImageFile):
    """A JPEG XL file opened lazily: size, mode and metadata at open, the pixels decoded on `load()`."""

    format = FORMAT
    format_description = "JPEG XL (libjxl through imagecodecs)"

    def _open(self) -> None:
        assert self.fp is not None
        self._data = self.fp.read()
        try:
            info: dict[str, Any] = imagecodecs.jpegxl_info(self._data)
        except Exception as exc:  # noqa: BLE001 - libjxl's refusal of the header
            raise SyntaxError(f"not a readable JPEG XL header: {exc}") from exc
        shape = info["shape"]
        samples = 1 if len(shape) == 2 else shape[-1]
        if info.get("frames", 1) > 1:
            self.n_frames = info["frames"]  # frame 0 is the image, as for every animated format
        self._mode = _MODES.get(samples, "RGB")
        self._size = (shape[1], shape[0])
        boxes = _boxes(self._data)
        exif = boxes.get(b"Exif")
        if exif is not None and len(exif) > 4:  # a 4-byte offset to the TIFF header comes first
            self.info["exif"] = exif[4 + int.from_bytes(exif[:4], "big"):]
        if b"xml " in boxes:
            self.info["xmp"] = boxes[b"xml "]
        if "exif" in self.info and self.getexif().get(ExifTags.Base.Orientation, 1) != 1:
            tags = self.getexif()  # libjxl applies the codestream's orientation: the EXIF's must not act again
            tags[ExifTags.Base.Orientation] = 1
            self.info["exif"] = tags.tobytes()
        self.tile = []

    def load(self) -> Any:
        if self.tile == [] and self._im is None:
            try:
                pixels = imagecodecs.jpegxl_decode(self._data, index=0)
            except Exception as exc:  # noqa: BLE001 - libjxl reports a cut file as a generic error
                raise OSError(f"JPEG XL decode failed: {exc}") from exc
            if pixels.ndim == 4:
                pixels = pixels[0]
            if pixels.dtype != np.uint8:  # 16-bit and float JPEG XL: to 8 bits, as the callers work
                peak = 65535.0 if pixels.dtype == np.uint16 else 1.0
                pixels = np.clip(pixels.astype(np.float32) * (255.0 / peak) + 0.5, 0, 255).astype(np.uint8)
            decoded = Image.fromarray(np.ascontiguousarray(pixels), self.mode)
            self.im = decoded.im
        return super().load()


Image.register_open(FORMAT, JpegXlImageFile, _accept)
Image.register_extensions(FORMAT, [".jxl"])
Image.register_mime(FORMAT, "image/jxl")
