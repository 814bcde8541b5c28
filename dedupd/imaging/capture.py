"""Capture identity from a photo's metadata: when (to the sub-second), with which camera, which shot.

Why: two burst frames or two shots of a sunset look alike to every hash and CNN, but the camera
wrote a different capture time (or unique id) into each; a re-encoded or resized copy keeps the
original's. `read_capture` reads it from the image Pillow already opened (no second read of the
file): EXIF DateTimeOriginal, SubSecTimeOriginal, OffsetTimeOriginal, Make, Model, BodySerialNumber,
ImageUniqueID, and a phone's burst identifier from XMP (Google Camera's `GCamera:BurstID`, Apple's
`BurstUUID` where an exporter put it in XMP; Apple's MakerNote is not parsed). Pillow's own EXIF
reader is used (it is already the imaging owner; exifread or piexif would be a second parser of the
same bytes). Malformed metadata is no metadata: it never makes a file unreadable.
"""

import logging
import re

from PIL import ExifTags, Image

from dedupd.records import Capture

log = logging.getLogger(__name__)

_BASE = ExifTags.Base
#: XMP properties that name a burst (attribute or element form), local names matched case-insensitively.
_BURST = re.compile(rb"(?:BurstID|BurstUUID)\s*(?:=\s*[\"']([^\"']{1,128})[\"']|>\s*([^<]{1,128})<)", re.IGNORECASE)


def _text(value: object) -> str | None:
    """An EXIF value as stripped text; None for absent, empty or binary junk."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    text = str(value).strip("\x00 \t\r\n")
    return text or None


def _burst_id(image: Image.Image) -> str | None:
    xmp = image.info.get("xmp") or image.info.get("XML:com.adobe.xmp")
    if isinstance(xmp, str):
        xmp = xmp.encode("utf-8", "replace")
    if not isinstance(xmp, bytes):
        return None
    found = _BURST.search(xmp)
    if found is None:
        return None
    return _text(found.group(1) or found.group(2))


def read_capture(image: Image.Image) -> Capture:
    """The capture identity of an opened image (fields the file does not carry are None)."""
    try:
        exif = image.getexif()
        sub = exif.get_ifd(ExifTags.IFD.Exif)
        return Capture(
            format=image.format,
            time=_text(sub.get(_BASE.DateTimeOriginal) or exif.get(_BASE.DateTimeOriginal)),
            subsec=_text(sub.get(_BASE.SubsecTimeOriginal)),
            offset=_text(sub.get(_BASE.OffsetTimeOriginal)),
            make=_text(exif.get(_BASE.Make)),
            model=_text(exif.get(_BASE.Model)),
            serial=_text(sub.get(_BASE.BodySerialNumber)),
            unique_id=_text(sub.get(_BASE.ImageUniqueID)),
            burst_id=_burst_id(image),
        )
    except Exception as exc:  # noqa: BLE001 - bad metadata is no evidence, never a skipped file
        log.debug("unreadable metadata: %s", exc)
        return Capture(format=image.format)
