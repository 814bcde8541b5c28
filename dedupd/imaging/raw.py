"""Camera RAW files through LibRaw (rawpy): the one rawpy user.

Why LibRaw: it reads every camera's RAW (CR2, CR3, NEF, ARW, DNG, RAF, ORF, RW2, PEF, ...) and is
what darktable, RawTherapee and digiKam build on; rawpy is its maintained binding with manylinux
wheels (rawkit and pillow-raw-opener wrap the same library, less kept). What dedupd needs of a RAW
is what a photographer sees of it, cheaply:

* the embedded preview the camera rendered (JPEG or bitmap) when it is a *usable* one: its short
  side at least the matcher's `min_side` and its aspect ratio the sensor's (a 160x120 thumbnail
  is not); no demosaicing then;
* else a half-size demosaic (each 2x2 Bayer block one pixel) with the camera's white balance.

The orientation is the RAW's own (LibRaw's `flip`), never the preview's EXIF: a camera's preview is
stored unrotated. The capture identity (imaging.capture) comes from the RAW's TIFF IFDs where the
container is TIFF (DNG, CR2, NEF, ARW, PEF: Pillow reads their EXIF), else from the preview's EXIF,
with LibRaw's capture time as the last resort. A file whose bytes name a RAW container but which
LibRaw cannot open, a RAW without a usable preview whose raw data cannot be demosaiced, and a file
shorter than its data are skips with a reason; a TIFF that LibRaw does not know is left to Pillow.
"""

import io
import logging
from dataclasses import replace
from typing import NamedTuple

import numpy as np
import rawpy
from PIL import Image, TiffImagePlugin

from dedupd.errors import Skipped, SkipReason
from dedupd.imaging.capture import read_capture
from dedupd.records import Capture

log = logging.getLogger(__name__)

#: LibRaw's `flip` (0 none, 3 = 180, 5 = 90 CCW, 6 = 90 CW) as the transpose that shows the image upright.
_FLIP_TRANSPOSE: dict[int, Image.Transpose] = {
    3: Image.Transpose.ROTATE_180,
    5: Image.Transpose.ROTATE_90,
    6: Image.Transpose.ROTATE_270,
}

#: TIFF-based RAWs named by their Make (IFD0), when they are not DNG.
_TIFF_RAW_BY_MAKE = (("CANON", "CR2"), ("NIKON", "NEF"), ("SONY", "ARW"), ("PENTAX", "PEF"), ("RICOH", "PEF"))
_DNG_VERSION = 50706
_MAKE = 0x010F


def raw_container(data: bytes) -> str | None:
    """The RAW container the first bytes name (pure): "CR3", "RAF", "ORF", "RW2", or "TIFF" for the
    TIFF-based ones (DNG, CR2, NEF, ARW, PEF and plain TIFF alike: only LibRaw can tell them apart);
    None for anything else."""
    head = data[:16]
    if head[4:8] == b"ftyp" and head[8:12] == b"crx ":
        return "CR3"
    if head.startswith(b"FUJIFILMCCD-RAW"):
        return "RAF"
    if head[:4] in (b"IIRO", b"IIRS", b"MMOR"):
        return "ORF"
    if head[:4] == b"IIU\x00":
        return "RW2"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    return None


#: (offsets, byte counts) tags of a TIFF directory's image data: strips, tiles.
_DATA_TAGS = ((273, 279), (324, 325))
_SUB_IFDS = 330


def tiff_ends_early(data: bytes) -> bool:
    """Whether a TIFF-based file's image data (the strips or tiles of IFD0's chain and of their SubIFDs,
    where a DNG keeps the sensor data) runs past its end. Pillow's directory reader parses the IFDs;
    an unparsable directory is no evidence (False)."""
    fp = io.BytesIO(data)
    pending = [int.from_bytes(data[4:8], "little" if data[:2] == b"II" else "big")]
    seen: set[int] = set()
    while pending and len(seen) < 64:
        offset = pending.pop()
        if offset in seen or not 8 <= offset < len(data):
            continue
        seen.add(offset)
        try:
            ifd = TiffImagePlugin.ImageFileDirectory_v2(data[:8])
            fp.seek(offset)
            ifd.load(fp)
        except Exception:  # noqa: BLE001 - a damaged directory is LibRaw's to judge
            return False
        for offsets_tag, counts_tag in _DATA_TAGS:
            starts, counts = ifd.get(offsets_tag, ()), ifd.get(counts_tag, ())
            starts = starts if isinstance(starts, tuple) else (starts,)
            counts = counts if isinstance(counts, tuple) else (counts,)
            if any(start + count > len(data) for start, count in zip(starts, counts, strict=False)):
                return True
        subs = ifd.get(_SUB_IFDS, ())
        pending.extend(subs if isinstance(subs, tuple) else (subs,))
        pending.append(ifd.next or 0)
    return False


class RawImage(NamedTuple):
    """What a RAW gives the decoder: an image Pillow may still reduce while loading (the preview JPEG, or
    the demosaic as RGB), the transpose that shows it upright (None: upright), the sensor's displayed
    size, the capture identity, and whether the pixels are the camera's preview (False: a demosaic)."""

    image: Image.Image
    transpose: Image.Transpose | None
    size: tuple[int, int]
    capture: Capture
    from_preview: bool


def _skip(exc: BaseException, what: str) -> Skipped:
    """LibRaw's exception as the reason users see: a short read is a truncated file."""
    if isinstance(exc, rawpy.LibRawFileUnsupportedError):
        reason = SkipReason.UNSUPPORTED_FORMAT
    elif isinstance(exc, rawpy.LibRawIOError):
        reason = SkipReason.TRUNCATED
    else:
        reason = SkipReason.DECODE_ERROR
    return Skipped(reason, f"{what}: {type(exc).__name__}: {exc}")


def _tiff_capture(data: bytes) -> Capture | None:
    """The capture identity from a TIFF-based RAW's IFD0 and EXIF IFD (Pillow parses the directories, no
    pixels), its format named DNG, CR2, NEF, ARW, PEF or RAW; None where Pillow cannot parse it."""
    try:
        with Image.open(io.BytesIO(data)) as tiff:
            capture = read_capture(tiff)
            ifd0 = tiff.getexif()
            make = str(ifd0.get(_MAKE, "")).upper()
            dng = _DNG_VERSION in ifd0
    except Exception as exc:  # noqa: BLE001 - unparsable metadata is no metadata
        log.debug("no TIFF metadata in a RAW: %s", exc)
        return None
    name = "DNG" if dng else next((fmt for prefix, fmt in _TIFF_RAW_BY_MAKE if make.startswith(prefix)), "RAW")
    return replace(capture, format=name)


def _merged(first: Capture | None, second: Capture | None, name: str, raw: rawpy.RawPy) -> Capture:
    """The fields of `first`, each missing one from `second`, the time from LibRaw last; format `name`.
    LibRaw is asked only when neither has a time: rawpy's `other` unpacks the whole sensor data first
    (~140 ms of a CR2's 141 ms preview path, BENCHMARKS.md "Formats")."""
    a, b = first or Capture(), second or Capture()
    return Capture(
        format=name,
        time=a.time or b.time or _libraw_time(raw),
        subsec=a.subsec or b.subsec,
        offset=a.offset or b.offset,
        make=a.make or b.make,
        model=a.model or b.model,
        serial=a.serial or b.serial,
        unique_id=a.unique_id or b.unique_id,
        burst_id=a.burst_id or b.burst_id,
    )


def _libraw_time(raw: rawpy.RawPy) -> str | None:
    """LibRaw's capture time in EXIF's form; None when the file carries none (the epoch)."""
    try:
        stamp = raw.other.timestamp
    except Exception:  # noqa: BLE001 - a LibRaw build without the field
        return None
    if stamp is None or stamp.year <= 1970:
        return None
    return str(stamp.strftime("%Y:%m:%d %H:%M:%S"))


def usable_preview(preview: tuple[int, int], sensor: tuple[int, int], min_side: int) -> bool:
    """Whether a preview of size `preview` stands for a sensor image of size `sensor` (pure): its short side
    at least `min_side` (what the matcher decodes to) and its aspect ratio the sensor's within 3%."""
    (pw, ph), (sw, sh) = sorted(preview), sorted(sensor)
    if pw < min_side or sw == 0:
        return False
    return abs(ph / pw - sh / sw) <= 0.03 * (sh / sw)


def _preview(raw: rawpy.RawPy, sensor: tuple[int, int], min_side: int) -> tuple[Image.Image, Capture | None] | None:
    """The camera's usable embedded preview, opened lazily (a JPEG) or as RGB (a bitmap), and the JPEG's
    own capture identity; None when there is none or it is too small or cropped."""
    try:
        thumb = raw.extract_thumb()
    except (rawpy.LibRawNoThumbnailError, rawpy.LibRawUnsupportedThumbnailError):
        return None
    if thumb.format == rawpy.ThumbFormat.JPEG:
        image = Image.open(io.BytesIO(bytes(thumb.data)))
        if image.format != "JPEG" or not usable_preview(image.size, sensor, min_side):
            image.close()
            return None
        return image, read_capture(image)
    pixels = np.ascontiguousarray(thumb.data, dtype=np.uint8)
    shape = pixels.shape
    if pixels.ndim != 3 or shape[2] != 3 or not usable_preview((shape[1], shape[0]), sensor, min_side):
        return None
    return Image.fromarray(pixels, "RGB"), None


def open_raw(data: bytes, container: str, *, min_side: int, max_pixels: int) -> RawImage | None:
    """Decode a RAW's bytes (`container` from `raw_container`); None for a TIFF LibRaw does not know.

    Raises `Skipped`: LibRaw cannot open a file whose bytes name a RAW container, the sensor exceeds
    `max_pixels`, or neither a usable preview nor a demosaic of the raw data can be had.
    """
    tiff = _tiff_capture(data) if container == "TIFF" else None
    name = tiff.format if tiff is not None and tiff.format else container
    # A DNG or a CR2 (its own magic) is a RAW whatever LibRaw says; another TIFF only once LibRaw opened it.
    camera_tiff = name == "DNG" or data[8:10] == b"CR"
    cut = container == "TIFF" and tiff_ends_early(data)
    if cut and camera_tiff:
        raise Skipped(SkipReason.TRUNCATED, f"{name}: the file ends before its image data")
    try:
        raw = rawpy.imread(io.BytesIO(data))
    except rawpy.LibRawFileUnsupportedError as exc:
        if container == "TIFF" and not camera_tiff:
            return None
        raise _skip(exc, f"LibRaw cannot read this {name}") from exc
    except (rawpy.LibRawError, OSError, ValueError) as exc:
        raise _skip(exc, f"LibRaw cannot read this {name}") from exc
    if cut:
        raw.close()
        raise Skipped(SkipReason.TRUNCATED, f"{name}: the file ends before its image data")
    with raw:
        sizes = raw.sizes
        sensor = (sizes.width, sizes.height)
        if sensor[0] * sensor[1] > max_pixels:
            detail = f"{sensor[0]}x{sensor[1]} exceeds max_image_pixels={max_pixels}"
            raise Skipped(SkipReason.DECOMPRESSION_BOMB, detail)
        transpose = _FLIP_TRANSPOSE.get(sizes.flip)
        shown = (sensor[1], sensor[0]) if sizes.flip in (5, 6) else sensor
        try:
            found = _preview(raw, sensor, min_side)
        except Exception as exc:  # noqa: BLE001 - a damaged preview: the raw data may still be whole
            log.debug("unreadable RAW preview: %s", exc)
            found = None
        if found is not None:
            image, jpeg = found
            return RawImage(image, transpose, shown, _merged(tiff, jpeg, name, raw), True)
        try:
            rgb = raw.postprocess(half_size=True, use_camera_wb=True, user_flip=0, output_bps=8)
        except (rawpy.LibRawError, MemoryError) as exc:
            raise _skip(exc, f"{name} without a usable preview, and its raw data cannot be demosaiced") from exc
        capture = _merged(tiff, None, name, raw)
        return RawImage(Image.fromarray(np.ascontiguousarray(rgb), "RGB"), transpose, shown, capture, False)
