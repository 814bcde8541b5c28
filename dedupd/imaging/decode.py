"""Image decoding: the only Pillow user.

Owns opening a file once, the pixel-count guard against decompression bombs, format detection from
the bytes (never the extension), mode conversion, and turning every failure into `Skipped` with a
reason. Two paths share it:

* the imagededup path (`load_image`, `preprocess`): bit-for-bit imagededup's `load_image` /
  `preprocess_image` (imagededup-spec.md §3-§4): format whitelist, non-RGB -> RGBA -> RGB, no EXIF
  orientation, frame 0, per-channel LANCZOS resize *before* the luma conversion;
* dedupd's own path (`open_image`): every format Pillow and its plugins read (HEIC/HEIF through pillow-heif,
  AVIF natively, JPEG XL through imagecodecs' libjxl (imaging.jxl)); in `open_for_matching`, camera RAWs through LibRaw
  first (imaging.raw).
"""

import io
import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import imagecodecs
import numpy as np
import pillow_heif
from PIL import ExifTags, Image, ImageFile, UnidentifiedImageError

from dedupd.errors import Skipped, SkipReason, without_addresses
from dedupd.imaging import jxl  # noqa: F401 - importing it registers the JPEG XL reader with Pillow
from dedupd.imaging.capture import read_capture
from dedupd.imaging.raw import open_raw, raw_container
from dedupd.records import Capture

log = logging.getLogger(__name__)

pillow_heif.register_heif_opener()

# The pixel guard is ours (`max_pixels` below), so a 200 MP panorama can be allowed without raising
# Pillow's process-wide default; Pillow's own check would otherwise fire first at ~179 MP.
Image.MAX_IMAGE_PIXELS = None

#: Formats imagededup accepts (PGM/PBM report as PPM); anything else is `None` there.
IMAGEDEDUP_FORMATS = frozenset({"JPEG", "PNG", "BMP", "MPO", "PPM", "TIFF", "GIF", "WEBP"})

#: Pillow's default error threshold (2 x its warning limit): what imagededup effectively enforces.
PILLOW_DEFAULT_MAX_PIXELS = 2 * 89_478_485

#: dedupd's default guard: room for real >= 200 MP panoramas, not for a 64k x 64k bomb.
DEFAULT_MAX_PIXELS = 250_000_000

_TRUNCATION_MARKERS = ("truncated", "broken data stream", "premature end", "unexpected end")


def ends_early(data: bytes) -> bool:
    """Whether the file ends before its container says it does (pure): a RIFF file (WebP) shorter than its
    header's size, or an ISO-BMFF file (HEIC, AVIF, a JPEG XL container) whose top-level boxes run past its
    end. Why: their decoders report a cut file as a generic error ("could not create decoder object",
    libjxl's "Generic Error")."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return int.from_bytes(data[4:8], "little") + 8 > len(data)
    if data[4:8] not in (b"ftyp", b"JXL "):
        return False
    offset = 0
    while offset + 8 <= len(data):
        size = int.from_bytes(data[offset:offset + 4], "big")
        if size == 1 and offset + 16 <= len(data):
            size = int.from_bytes(data[offset + 8:offset + 16], "big")
        if size == 0:  # the last box runs to the end of the file
            return False
        if size < 8 or offset + size > len(data):
            return size >= 8
        offset += size
    return offset < len(data)


def skip_for_exception(exc: BaseException) -> Skipped:
    """Map an exception raised while opening or decoding to the reason users see in `status`."""
    if isinstance(exc, Skipped):
        return exc
    detail = without_addresses(f"{type(exc).__name__}: {exc}")  # Pillow names the BytesIO it was given
    if isinstance(exc, FileNotFoundError):
        return Skipped(SkipReason.VANISHED, detail)
    if isinstance(exc, Image.DecompressionBombError):
        return Skipped(SkipReason.DECOMPRESSION_BOMB, detail)
    if isinstance(exc, UnidentifiedImageError):
        return Skipped(SkipReason.UNSUPPORTED_FORMAT, detail)
    if isinstance(exc, (PermissionError, IsADirectoryError, NotADirectoryError)):
        return Skipped(SkipReason.UNREADABLE, detail)
    if isinstance(exc, (OSError, SyntaxError)) and any(m in str(exc).lower() for m in _TRUNCATION_MARKERS):
        return Skipped(SkipReason.TRUNCATED, detail)
    if isinstance(exc, OSError) and exc.errno is not None:
        return Skipped(SkipReason.UNREADABLE, detail)
    return Skipped(SkipReason.DECODE_ERROR, detail)


@contextmanager
def open_image(
    source: str | os.PathLike[str] | io.BytesIO,
    *,
    formats: frozenset[str] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Iterator[Image.Image]:
    """Open `source` (a path or bytes already read) lazily, check format and size, close it afterwards.

    Raises `Skipped` with the reason when the file is missing, unreadable, empty, of a format
    outside `formats` (None = anything Pillow can read), or larger than `max_pixels`.
    """
    try:
        if not isinstance(source, io.BytesIO) and os.stat(source).st_size == 0:
            raise Skipped(SkipReason.TOO_SMALL, "empty file")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(source)
    except Exception as exc:  # noqa: BLE001 - every failure becomes a counted Skip
        raise skip_for_exception(exc) from exc
    try:
        if formats is not None and image.format not in formats:
            raise Skipped(SkipReason.UNSUPPORTED_FORMAT, f"Invalid image format {image.format}!")
        width, height = image.size
        if width * height > max_pixels:
            raise Skipped(
                SkipReason.DECOMPRESSION_BOMB, f"{width}x{height} exceeds max_image_pixels={max_pixels}"
            )
        yield image
    finally:
        image.close()


def _to_rgb(image: Image.Image) -> Image.Image:
    """imagededup's colour rule: anything not RGB goes through RGBA, which drops alpha unblended."""
    if image.mode != "RGB":
        return image.convert("RGBA").convert("RGB")
    image.load()
    return image


@contextmanager
def imagededup_rgb(
    path: str | os.PathLike[str], *, max_pixels: int = PILLOW_DEFAULT_MAX_PIXELS, min_side: int | None = None
) -> Iterator[Image.Image]:
    """The decoded RGB image imagededup's `load_image` works on (whitelist, RGBA->RGB, no EXIF, frame 0).

    With `min_side`, decoded at the smallest size whose short side stays >= min_side (see `_reduced`):
    for consumers that resize down to that size anyway. Valid only inside the `with` block, so several
    encodings can share one decode without a copy.
    """
    with open_image(path, formats=IMAGEDEDUP_FORMATS, max_pixels=max_pixels) as image:
        try:
            rgb = _to_rgb(_reduced(image, min_side) if min_side else image)
        except Exception as exc:  # noqa: BLE001 - Pillow raises many types while decoding
            raise skip_for_exception(exc) from exc
        yield rgb


def preprocess(
    image: Image.Image | np.ndarray, target_size: tuple[int, int] | None = None, grayscale: bool = False
) -> np.ndarray:
    """imagededup's `preprocess_image`: optional LANCZOS resize of the RGB image, then optional luma.

    Arrays are cast with `astype('uint8')` first (C cast semantics, as imagededup), 2-D -> mode L,
    (h, w, 3) -> RGB. `target_size` is PIL's (width, height).
    """
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image.astype("uint8"))
    elif not isinstance(image, Image.Image):
        raise ValueError("Input is expected to be a numpy array or a pillow object!")
    if target_size:
        image = image.resize(target_size, Image.Resampling.LANCZOS)
    if grayscale:
        image = image.convert("L")
    return np.array(image).astype("uint8")


def load_image(
    path: str | os.PathLike[str], target_size: tuple[int, int] | None = None, grayscale: bool = False
) -> np.ndarray:
    """imagededup's `load_image` with failures raised as `Skipped` instead of returning None."""
    with imagededup_rgb(Path(path)) as rgb:
        try:
            return preprocess(rgb, target_size, grayscale)
        except Exception as exc:  # noqa: BLE001
            raise skip_for_exception(exc) from exc


def load_rgb(path: str | os.PathLike[str], min_side: int | None = None) -> np.ndarray:
    """The RGB uint8 array imagededup feeds its CNN (no EXIF, frame 0); reduced-size with `min_side`."""
    if min_side is None:
        return load_image(path)
    with imagededup_rgb(Path(path), min_side=min_side) as rgb:
        return np.asarray(rgb).copy()


#: Shortest side dedupd's own path decodes to: enough for wHash's 256 px input and the CNN's.
MATCH_MIN_SIDE = 256


def _to_display_rgb(image: Image.Image) -> Image.Image:
    """RGB as a viewer shows it: alpha composited on white, 16-bit and float images rescaled."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return Image.fromarray((np.asarray(image, dtype=np.uint16) >> 8).astype(np.uint8)).convert("RGB")
    if image.mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float64)
        peak = max(float(values.max()), 1.0)
        return Image.fromarray(np.clip(values * (255.0 / peak), 0, 255).astype(np.uint8)).convert("RGB")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


#: Modes Pillow's `reduce` refuses; such images (palette, bilevel, 16-bit grey) are used at full size.
_NOT_REDUCIBLE = frozenset({"1", "P", "I;16", "I;16B", "I;16L", "I;16N"})


#: The last 12 bytes of every complete PNG: an empty IEND chunk and its CRC.
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"

#: PNG chunks that Pillow reads into `info` (EXIF, XMP, text) only when it loads the pixels, if they follow them.
_PNG_LATE_METADATA = (b"eXIf", b"iTXt", b"tEXt", b"zTXt")


def _fast_png(image: Image.Image, data: bytes) -> Image.Image | None:
    """The pixels of a plain 8-bit PNG through libpng (imagecodecs), about twice Pillow's speed; else None.

    Only where the pixels are the same as Pillow's by construction: a single-frame, complete PNG (ends
    with IEND) of 8 bits per sample in L, LA, RGB or RGBA, without a tRNS colour key (which Pillow keeps
    beside the pixels, in `info`). Palette, 16-bit, packed and animated PNGs, and any file libpng
    refuses, go through Pillow as before, so skips and their reasons do not change. So do PNGs whose
    bytes after the image data's start hold a metadata chunk's name (or those 4 bytes by chance): Pillow
    reads such chunks while it loads. Otherwise `image` becomes loaded with these pixels, so that its
    `getexif()` does not decode it a second time.
    """
    if image.mode not in ("L", "LA", "RGB", "RGBA") or "transparency" in image.info:
        return None
    if getattr(image, "n_frames", 1) != 1 or not data.endswith(_PNG_END):
        return None
    # One tile whose raw mode is the mode: 8 bits per sample (a 16-bit or packed PNG reads "RGB;16B", "L;4" ...).
    if not isinstance(image, ImageFile.ImageFile) or len(image.tile) != 1 or image.tile[0].args != image.mode:
        return None
    if any(data.find(name, image.tile[0].offset) >= 0 for name in _PNG_LATE_METADATA):
        return None
    try:
        pixels = imagecodecs.png_decode(data)
    except Exception:  # noqa: BLE001 - libpng's refusal: Pillow decodes (or skips) it as before
        return None
    decoded = Image.fromarray(pixels) if pixels.dtype == np.uint8 else None
    if decoded is None or decoded.mode != image.mode or decoded.size != image.size:
        return None
    image.im, image.tile = decoded.im, []  # loaded: Pillow's load() (getexif's) is now a no-op
    return decoded


def _reduced(image: Image.Image, min_side: int, data: bytes | None = None) -> Image.Image:
    """Decode at the smallest size whose short side is still >= min_side.

    JPEG decodes at 1/2, 1/4 or 1/8 scale in the IDCT (`draft`), which is most of the speed-up;
    other formats decode fully and are box-reduced by an integer factor before any resampling. A
    plain PNG whose bytes are at hand (`data`) decodes through libpng (`_fast_png`): same pixels.
    """
    if image.format == "JPEG":
        image.draft("RGB", (min_side, min_side))
    fast = _fast_png(image, data) if data is not None and image.format == "PNG" else None
    if fast is not None:
        image = fast
    else:
        image.load()
    factor = min(image.size) // min_side
    if factor < 2 or image.mode in _NOT_REDUCIBLE:
        return image
    return image.reduce(factor)


class Decoded(NamedTuple):
    """What dedupd's own decode yields: the pixels twice (as stored, as displayed), the displayed size,
    and the capture identity from the file's metadata (read from the same open image)."""

    stored: Image.Image
    oriented: Image.Image
    size: tuple[int, int]
    capture: Capture


#: ISO-BMFF major brands of video files (MP4, QuickTime, 3GPP): never images (HEIF, AVIF, CR3 brands differ).
_VIDEO_BRANDS = frozenset({b"isom", b"iso2", b"iso4", b"iso5", b"iso6", b"mp41", b"mp42", b"qt  ", b"M4V ", b"M4VP",
                           b"avc1", b"3gp4", b"3gp5", b"3gp6", b"3g2a", b"MSNV", b"dash", b"XAVC", b"mmp4"})


def is_video(data: bytes) -> bool:
    """Whether the bytes are a video container (pure): MP4/QuickTime/3GPP, AVI, Matroska/WebM."""
    if data[4:8] == b"ftyp":
        return data[8:12] in _VIDEO_BRANDS
    if data[4:8] in (b"moov", b"mdat", b"wide", b"free"):  # an old QuickTime file without ftyp
        return True
    return (data[:4] == b"RIFF" and data[8:12] == b"AVI ") or data[:4] == b"\x1a\x45\xdf\xa3"


def refuse_video(head: bytes) -> None:
    """Raise the quiet `video` skip when `head` (a file's first 16 bytes suffice) is a video container's: called
    before a file is read whole, so a phone video is neither read nor counted `too_large` over `max_file_size`."""
    if is_video(head):
        raise Skipped(SkipReason.VIDEO, "a video file")


@contextmanager
def _open_camera_format(data: bytes, min_side: int, max_pixels: int) -> Iterator[Decoded | None]:
    """The `Decoded` of a camera RAW (imaging.raw); None for other bytes (and a TIFF LibRaw does not know)."""
    container = raw_container(data)
    raw = open_raw(data, container, min_side=min_side, max_pixels=max_pixels) if container is not None else None
    if raw is not None:
        with raw.image:
            try:
                stored = _to_display_rgb(_reduced(raw.image, min_side))
                oriented = stored.transpose(raw.transpose) if raw.transpose is not None else stored
            except Exception as exc:  # noqa: BLE001 - the preview JPEG's decoder errors
                raise skip_for_exception(exc) from exc
            yield Decoded(stored, oriented, raw.size, raw.capture)
        return
    yield None


@contextmanager
def open_for_matching(
    data: bytes, *, min_side: int = MATCH_MIN_SIDE, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Iterator[Decoded]:
    """dedupd's own decode of a file's bytes: every readable format, reduced size, frame 0.

    Yields a `Decoded`. The stored orientation serves the imagededup-style hashes (imagededup never
    rotates); the oriented one serves the matcher.
    """
    if not data:
        raise Skipped(SkipReason.TOO_SMALL, "empty file")
    refuse_video(data)
    with _open_camera_format(data, min_side, max_pixels) as camera:
        if camera is not None:
            yield camera
            return
    try:
        with open_image(io.BytesIO(data), max_pixels=max_pixels) as image:
            try:
                full_size = image.size
                stored = _to_display_rgb(_reduced(image, min_side, data))
                orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
                transpose = _ORIENTATION_TRANSPOSE.get(orientation)
                oriented = stored.transpose(transpose) if transpose is not None else stored
            except Exception as exc:  # noqa: BLE001 - Pillow raises many types while decoding
                raise skip_for_exception(exc) from exc
            if orientation in (5, 6, 7, 8):
                full_size = (full_size[1], full_size[0])
            yield Decoded(stored, oriented, full_size, read_capture(image))
    except Skipped as skip:
        if skip.reason in (SkipReason.DECODE_ERROR, SkipReason.UNSUPPORTED_FORMAT) and ends_early(data):
            raise Skipped(SkipReason.TRUNCATED, f"{skip.detail} (the file ends before its container says)") from skip
        raise


_ORIENTATION_TRANSPOSE: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
