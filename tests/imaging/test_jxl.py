"""JPEG XL (dedupd.imaging.jxl: imagecodecs' libjxl, registered with Pillow by dedupd.imaging.decode): read in the
default install, upright by the codestream's orientation, capture identity from its EXIF box, a cut file is
`truncated`. The files are written by libjxl's own encoder (imagecodecs), as `cjxl` writes them: a camera JPEG
transcoded losslessly (its EXIF orientation becomes the codestream's), or pixels encoded lossily."""

import io
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
from PIL import Image

from dedupd.errors import Skipped, SkipReason
from dedupd.imaging.decode import open_for_matching
from dedupd.imaging.encode import ORIENTED_HASH, encode_path, read_file


def _photo(photos: list[Path]) -> Image.Image:
    with Image.open(photos[0]) as image:  # scikit-image's astronaut: a real photograph
        rgb = image.convert("RGB")
    rgb.thumbnail((480, 480))
    return rgb.crop((0, 0, rgb.width, rgb.height * 3 // 4))  # landscape, so orientation shows


def _camera_exif(orientation: int = 1) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "Canon"
    exif[0x0110] = "Canon EOS R6"
    exif.get_ifd(0x8769)[0x9003] = "2024:06:01 18:30:14"  # DateTimeOriginal
    return exif


def _transcoded(rgb: Image.Image, orientation: int = 1) -> bytes:
    """A camera JPEG of `rgb` with its EXIF, transcoded to JPEG XL losslessly (a container with an Exif box)."""
    jpeg = io.BytesIO()
    rgb.save(jpeg, "JPEG", quality=90, exif=_camera_exif(orientation).tobytes())
    return imagecodecs.jpegxl_encode_jpeg(jpeg.getvalue())


def test_a_jxl_photo_decodes_upright_with_its_capture_identity(tmp_path: Path, photos: list[Path]) -> None:
    rgb = _photo(photos)
    path = tmp_path / "IMG_1.jxl"
    path.write_bytes(_transcoded(rgb.transpose(Image.Transpose.ROTATE_90), orientation=6))  # stored on its side
    encoded = encode_path(path)
    assert (encoded.encoding.width, encoded.encoding.height) == rgb.size
    capture = encoded.encoding.capture
    assert capture is not None
    assert (capture.format, capture.make, capture.model, capture.time) == (
        "JXL", "Canon", "Canon EOS R6", "2024:06:01 18:30:14"
    )
    with open_for_matching(read_file(path)) as decoded:
        upright = np.asarray(decoded.oriented.resize(rgb.size), dtype=np.int16)
    assert np.abs(upright - np.asarray(rgb, dtype=np.int16)).mean() < 8


def test_a_jxl_conversion_hashes_as_its_jpeg(tmp_path: Path, photos: list[Path]) -> None:
    """The matcher's orientation-aware pHash of a JPEG and of its JPEG XL conversion agree within the
    duplicate threshold (10 bits): the conversion is found as a copy."""
    rgb = _photo(photos)
    rgb.save(tmp_path / "a.jpg", "JPEG", quality=90)
    with Image.open(tmp_path / "a.jpg") as jpeg:  # a lossy re-encode, not a transcode
        (tmp_path / "a.jxl").write_bytes(imagecodecs.jpegxl_encode(np.asarray(jpeg.convert("RGB")), level=85))
    one, other = (encode_path(tmp_path / name).encoding.hashes[ORIENTED_HASH] for name in ("a.jpg", "a.jxl"))
    assert (one ^ other).bit_count() <= 4


@pytest.mark.parametrize("kept", [0.1, 0.5, 0.9])
def test_a_cut_jxl_is_truncated(tmp_path: Path, photos: list[Path], kept: float) -> None:
    path = tmp_path / "cut.jxl"
    data = _transcoded(_photo(photos))  # the EXIF box: a container
    path.write_bytes(data[: int(len(data) * kept)])
    with pytest.raises(Skipped) as skipped:
        encode_path(path)
    assert skipped.value.reason == SkipReason.TRUNCATED, skipped.value.detail
