"""Capture identity read from real frames with camera EXIF, copies of them, and XMP burst ids."""

import io
from pathlib import Path

import pytest
from PIL import Image

from dedupd.imaging.capture import read_capture
from dedupd.imaging.encode import encode_path
from tests.fixtures import captures


@pytest.fixture(scope="module")
def capture_dir() -> Path:
    return captures.cached()


def test_a_burst_frame_carries_time_subseconds_camera_and_unique_id(capture_dir: Path) -> None:
    got = encode_path(capture_dir / "bikes_060.jpg").encoding.capture
    assert got is not None and got.from_camera
    assert (got.format, got.time, got.subsec, got.offset) == ("JPEG", "2024:06:01 18:30:14", "52", "+02:00")
    assert (got.make, got.model, got.serial) == ("Canon", "Canon EOS R6", "032021001234")
    assert got.unique_id == f"{0xC0FFEE00 + 60:032x}"
    following = encode_path(capture_dir / "bikes_070.jpg").encoding.capture
    assert following is not None and (following.time, following.subsec) == ("2024:06:01 18:30:14", "92")


def test_copies_keep_or_lose_the_metadata_as_their_maker_did(capture_dir: Path) -> None:
    original = encode_path(capture_dir / "bikes_060.jpg").encoding.capture
    assert encode_path(capture_dir / "bikes_060_q70.jpg").encoding.capture == original
    stripped = encode_path(capture_dir / "bikes_060_stripped.jpg").encoding.capture
    png = encode_path(capture_dir / "bikes_060_png.png").encoding.capture
    assert stripped is not None and not stripped.from_camera and stripped.format == "JPEG"
    assert png is not None and not png.from_camera and png.format == "PNG"


def test_a_phone_burst_id_is_read_from_xmp() -> None:
    xmp = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF><rdf:Description '
           b'GCamera:BurstID="a1b2-c3" GCamera:BurstPrimary="1"/></rdf:RDF></x:xmpmeta>')  # fmt: skip
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), "gray").save(buffer, "JPEG", xmp=xmp)
    with Image.open(buffer) as image:
        assert read_capture(image).burst_id == "a1b2-c3"


def test_malformed_exif_is_no_evidence_not_an_error() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), "gray").save(buffer, "JPEG", exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff")
    with Image.open(buffer) as image:
        got = read_capture(image)
    assert got.format == "JPEG" and not got.from_camera
