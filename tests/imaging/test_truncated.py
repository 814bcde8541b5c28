"""Cut files of the container formats whose decoders say only "could not create decoder object" or "cannot
identify image file": counted as `truncated`, and no message carries a heap address."""

from pathlib import Path

import pytest

from dedupd.errors import Skipped, SkipReason
from dedupd.imaging.decode import ends_early
from dedupd.imaging.encode import encode_path

IMAGES = Path(__file__).parents[1] / "fixtures" / "images"


@pytest.mark.parametrize("name", ["image.heic", "lossy.webp", "lossless.webp", "animated.webp", "image.avif"])
@pytest.mark.parametrize("kept", [0.1, 0.5, 0.9])
def test_a_cut_heic_or_webp_is_truncated(tmp_path: Path, name: str, kept: float) -> None:
    data = (IMAGES / name).read_bytes()
    cut = tmp_path / name
    cut.write_bytes(data[: int(len(data) * kept)])
    with pytest.raises(Skipped) as skipped:
        encode_path(cut)
    assert skipped.value.reason == SkipReason.TRUNCATED, skipped.value.detail
    assert " at 0x" not in skipped.value.detail
    assert not ends_early(data) and ends_early(data[: int(len(data) * kept)])


def test_a_file_that_is_no_image_is_unsupported_and_named_without_a_heap_address(tmp_path: Path) -> None:
    with pytest.raises(Skipped) as skipped:
        encode_path(IMAGES / "not_an_image.jpg")
    assert skipped.value.reason == SkipReason.UNSUPPORTED_FORMAT
    assert skipped.value.detail == "UnidentifiedImageError: cannot identify image file"
