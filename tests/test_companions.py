"""The one rule of an image's companion files by name (dedupd.companions): sidecars and Live Photo motion files."""

from dedupd.companions import Companion, attached, companion_kind, named_like_companion
from dedupd.errors import SkipReason

SIDECAR, MOTION = SkipReason.SIDECAR, SkipReason.MOTION


def test_own_and_shared_sidecars_and_the_motion_file_of_a_still() -> None:
    card = ["/c/IMG_1.CR3", "/c/IMG_1.JPG", "/c/IMG_1.CR3.xmp", "/c/IMG_1.xmp", "/c/img_1.AAE", "/c/IMG_1.MOV",
            "/c/IMG_10.xmp", "/c/IMG_1.JPG.XMP", "/d/IMG_1.xmp", "/c/IMG_1.edit.xmp"]
    assert attached("/c/IMG_1.CR3", card) == [
        Companion("/c/IMG_1.CR3.xmp", SIDECAR, False), Companion("/c/IMG_1.xmp", SIDECAR, True),
        Companion("/c/img_1.AAE", SIDECAR, True)]  # a RAW is no still: the motion file is not its own
    assert attached("/c/IMG_1.JPG", card) == [
        Companion("/c/IMG_1.JPG.XMP", SIDECAR, False), Companion("/c/IMG_1.MOV", MOTION, True),
        Companion("/c/IMG_1.xmp", SIDECAR, True), Companion("/c/img_1.AAE", SIDECAR, True)]
    assert attached("/c/IMG_1.xmp", card) == []  # a companion has none
    assert attached("/c/IMG_2.JPG", card) == []


def test_what_a_name_alone_says() -> None:
    assert named_like_companion("/c/a.XMP") and named_like_companion("/c/a.mp4")
    assert not named_like_companion("/c/a.jpg")
    stills = {"/c/IMG_3.HEIC"}
    assert companion_kind("/c/IMG_3.MOV", stills.__contains__) == MOTION
    assert companion_kind("/c/IMG_4.MOV", stills.__contains__) is None  # a video of its own
    assert companion_kind("/c/IMG_4.aae", stills.__contains__) == SIDECAR
