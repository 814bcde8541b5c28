"""Camera RAW through LibRaw (dedupd.imaging.raw): the embedded preview when usable, else a half-size
demosaic; orientation from the RAW; capture identity from its IFDs; cut and unreadable RAWs are skips.

The RAWs are DNGs laid out as a camera writes them (tests/fixtures/dng.py: tifffile, from scikit-image's
photographs), read by the real LibRaw in rawpy's wheel."""

import io
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image

from dedupd.errors import Skipped, SkipReason
from dedupd.imaging.decode import open_for_matching
from dedupd.imaging.encode import ORIENTED_HASH, encode_bytes
from dedupd.imaging.raw import open_raw, raw_container, usable_preview


def _photo(photos: list[Path]) -> np.ndarray:
    with Image.open(photos[0]) as image:  # scikit-image's astronaut: a real photograph
        rgb = np.asarray(image.convert("RGB"))
    return np.ascontiguousarray(rgb[:384, :512])  # landscape, so a rotation shows in the size


def _jpeg(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


def _oriented_distance(a: bytes, b: bytes) -> int:
    one, other = (encode_bytes(data).encoding.hashes[ORIENTED_HASH] for data in (a, b))
    return (one ^ other).bit_count()


@pytest.mark.parametrize("preview", ["jpeg", "bitmap"])
def test_a_raw_with_a_full_size_preview_decodes_from_it(dng: ModuleType, photos: list[Path], preview: str) -> None:
    rgb = _photo(photos)
    data = dng.dng_bytes(rgb, preview=preview)
    raw = open_raw(data, "TIFF", min_side=256, max_pixels=10**8)
    assert raw is not None and raw.from_preview
    encoding = encode_bytes(data).encoding
    assert (encoding.width, encoding.height) == (512, 384)
    capture = encoding.capture
    assert capture is not None
    assert (capture.format, capture.make, capture.model, capture.time) == (
        "DNG", "Canon", "EOS R6", "2024:06:01 10:00:00"
    )
    assert _oriented_distance(data, _jpeg(rgb)) <= 4  # the camera's JPEG of the same exposure


@pytest.mark.parametrize("preview, scale", [(None, 1), ("jpeg", 4)])
def test_a_raw_without_a_usable_preview_is_demosaiced_at_half_size(
    dng: ModuleType, photos: list[Path], preview: str | None, scale: int
) -> None:
    rgb = _photo(photos)
    data = dng.dng_bytes(rgb, preview=preview, preview_scale=scale)
    raw = open_raw(data, "TIFF", min_side=128, max_pixels=10**8)
    assert raw is not None and not raw.from_preview
    assert raw.image.size == (256, 192)  # half the sensor
    encoding = encode_bytes(data).encoding
    assert (encoding.width, encoding.height) == (512, 384)  # the sensor's size, as displayed
    assert encoding.capture is not None and encoding.capture.format == "DNG"
    # The demosaic (identity colour matrix, the fixture's gamma) still matches the camera's JPEG.
    assert _oriented_distance(data, _jpeg(rgb)) <= 10


@pytest.mark.parametrize("preview", ["jpeg", None])
def test_the_raw_orientation_turns_the_image_upright(dng: ModuleType, photos: list[Path], preview: str | None) -> None:
    rgb = _photo(photos)
    data = dng.dng_bytes(rgb, preview=preview, orientation=6)  # stored as the sensor saw it, shown turned 90 CW
    with open_for_matching(data) as decoded:
        assert decoded.size == (384, 512)
        upright = np.asarray(Image.fromarray(rgb).transpose(Image.Transpose.ROTATE_270).resize(decoded.oriented.size))
        stored = np.asarray(Image.fromarray(rgb).resize(decoded.stored.size))
        assert np.abs(np.asarray(decoded.oriented, np.int16) - upright).mean() < 40
        assert np.abs(np.asarray(decoded.stored, np.int16) - stored).mean() < 40


@pytest.mark.parametrize("preview", ["jpeg", "bitmap", None])
@pytest.mark.parametrize("kept", [0.05, 0.5, 0.99])
def test_a_cut_raw_is_truncated(dng: ModuleType, photos: list[Path], preview: str | None, kept: float) -> None:
    data = dng.dng_bytes(_photo(photos), preview=preview)
    with pytest.raises(Skipped) as skip:
        encode_bytes(data[: int(len(data) * kept)])
    assert skip.value.reason == SkipReason.TRUNCATED


def test_a_raw_container_libraw_cannot_read_is_a_skip_with_a_reason() -> None:
    with pytest.raises(Skipped) as skip:
        encode_bytes(b"FUJIFILMCCD-RAW 0201FF383501" + bytes(4096))
    assert skip.value.reason in (SkipReason.UNSUPPORTED_FORMAT, SkipReason.DECODE_ERROR, SkipReason.TRUNCATED)
    assert "RAF" in skip.value.detail


def test_a_plain_tiff_is_still_pillows(photos: list[Path]) -> None:
    buffer = io.BytesIO()
    Image.fromarray(_photo(photos)).save(buffer, "TIFF")
    encoding = encode_bytes(buffer.getvalue()).encoding
    assert encoding.capture is not None and encoding.capture.format == "TIFF"


def test_raw_containers_are_named_from_their_bytes() -> None:
    assert raw_container(b"\x00\x00\x00\x18ftypcrx \x00\x00\x00\x01") == "CR3"
    assert raw_container(b"FUJIFILMCCD-RAW 0201") == "RAF"
    assert raw_container(b"IIRO\x08\x00\x00\x00") == "ORF"
    assert raw_container(b"IIU\x00\x08\x00\x00\x00") == "RW2"
    assert raw_container(b"II*\x00\x10\x00\x00\x00CR\x02\x00") == "TIFF"
    assert raw_container(b"\x00\x00\x00\x18ftypheic") is None
    assert raw_container(b"\xff\xd8\xff\xe0") is None


def test_a_preview_is_usable_when_large_enough_and_of_the_sensors_shape() -> None:
    assert usable_preview((6000, 4000), (6024, 4020), 256)
    assert usable_preview((1616, 1080), (6000, 4000), 256)  # a Sony ARW's preview
    assert not usable_preview((160, 120), (6000, 4000), 256)  # a thumbnail
    assert not usable_preview((1920, 1080), (6000, 4000), 256)  # a 16:9 crop of a 3:2 sensor
