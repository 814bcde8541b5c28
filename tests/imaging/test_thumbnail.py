"""Thumbnails for the review page: the freedesktop cache is used only when valid; made ones are upright JPEGs."""

import hashlib
import io
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from dedupd.errors import Skipped
from dedupd.imaging.thumbnail import desktop_thumbnail, file_uri, make_thumbnail


def _desktop_png(cache: Path, flavour: str, path: Path, mtime: int) -> Path:
    uri = file_uri(str(path))
    target = cache / "thumbnails" / flavour / (hashlib.md5(uri.encode()).hexdigest() + ".png")
    target.parent.mkdir(parents=True, exist_ok=True)
    info = PngImagePlugin.PngInfo()
    info.add_text("Thumb::URI", uri)
    info.add_text("Thumb::MTime", str(mtime))
    Image.new("RGB", (256, 200), "red").save(target, pnginfo=info)
    return target


def test_the_desktop_thumbnail_is_used_only_for_the_file_as_it_is(tmp_path: Path, photos: list[Path]) -> None:
    photo = tmp_path / "my photo #1.png"
    photo.write_bytes(photos[0].read_bytes())
    mtime = int(photo.stat().st_mtime)
    assert desktop_thumbnail(str(photo), mtime, 256, tmp_path) is None
    made = _desktop_png(tmp_path, "large", photo, mtime)
    found = desktop_thumbnail(str(photo), mtime, 256, tmp_path)
    assert found is not None and found.data == made.read_bytes() and found.media_type == "image/png"
    assert desktop_thumbnail(str(photo), mtime + 1, 256, tmp_path) is None  # the file changed since
    assert desktop_thumbnail(str(photo), mtime, 512, tmp_path) is None  # too small for what is asked


def test_made_thumbnails_are_upright_and_fit(tmp_path: Path, photos: list[Path]) -> None:
    with Image.open(photos[0]) as image:
        rgb = image.convert("RGB").resize((400, 200))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    rotated = tmp_path / "rotated.jpg"
    rgb.save(rotated, "JPEG", exif=exif)
    thumbnail = make_thumbnail(str(rotated), 128)
    assert thumbnail.media_type == "image/jpeg"
    with Image.open(io.BytesIO(thumbnail.data)) as small:
        assert small.size == (64, 128)  # portrait, as a viewer shows it
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    with pytest.raises(Skipped):
        make_thumbnail(str(broken), 128)
