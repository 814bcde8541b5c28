"""tests/fixtures/card.py makes what it says: each image on the card in its camera format, readable by dedupd's
decode, the videos real videos, the sidecars text, the camera's files older than the outside copy."""

from pathlib import Path
from types import ModuleType

import av

from dedupd.imaging.encode import encode_path


def test_the_card_holds_real_files_of_each_kind(tmp_path: Path, camera_card: ModuleType, dng: ModuleType) -> None:
    card = camera_card.build(tmp_path, dng)
    formats = {path.name: encode_path(path).encoding.capture.format
               for path in (card.raw, card.raw_jpeg, card.lone_jpeg, card.live_still, card.jxl, card.outside_copy)}
    assert formats == {"IMG_0042.DNG": "DNG", "IMG_0042.JPG": "JPEG", "IMG_0043.JPG": "JPEG",
                       "IMG_1001.HEIC": "HEIF", "IMG_1003.jxl": "JXL", "IMG_0042 copy.jpg": "JPEG"}
    for video, container in ((card.live_motion, "mov"), (card.video, "mp4")):
        with av.open(str(video)) as clip:
            assert container in clip.format.name.split(",")
            assert next(clip.decode(video=0)).width > 0
    assert {path.suffix for path in card.sidecars} == {".xmp", ".AAE"}
    assert all(path.read_text().startswith("<") for path in card.sidecars)
    assert max(path.stat().st_mtime for path in card.card_files) < card.outside_copy.stat().st_mtime
    assert card.raw.stem == card.raw_jpeg.stem and card.raw.parent == card.raw_jpeg.parent
    assert card.live_still.stem == card.live_motion.stem
