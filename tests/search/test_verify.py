"""Pixel verification of candidate pairs (search/verify.py) on real photographs: copies map onto their original by
one transform with nothing changed, a stereo pair does not; thumbnails as the encoder stores them."""

import io
from pathlib import Path

import numpy as np
import pytest
import skimage
from PIL import Image

from dedupd.imaging.encode import THUMB_LONG_SIDE, encode_bytes
from dedupd.records import Capture, pack_thumb, thumb_pixels
from dedupd.search.matcher import DUPLICATE, SIMILAR, evidence_of, tiers
from dedupd.search.verify import COPY, SIBLING, KeypointCache, Verifier, _blocks, _percentile_99

DATA = Path(skimage.__file__).parent / "data"


def _jpeg(image: Image.Image, quality: int = 90) -> bytes:
    out = io.BytesIO()
    image.convert("RGB").save(out, "JPEG", quality=quality)
    return out.getvalue()


def _thumb(image: Image.Image, quality: int = 90) -> bytes:
    thumb = encode_bytes(_jpeg(image, quality)).encoding.thumb
    assert thumb is not None
    return thumb


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return Image.open(DATA / "chelsea.png").convert("RGB")


def _copies(photo: Image.Image) -> dict[str, Image.Image]:
    w, h = photo.size
    return {
        "q70 half": photo.resize((w // 2, h // 2), Image.Resampling.LANCZOS),
        "crop 87.5%": photo.crop((w // 16, h // 10, w // 16 + w * 7 // 8, h // 10 + h * 7 // 8)),
        "mirror": photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
        "upside down": photo.transpose(Image.Transpose.FLIP_TOP_BOTTOM),
        "square": photo.resize((min(w, h), min(w, h)), Image.Resampling.LANCZOS),
        "rotated 25 degrees": photo.rotate(25, resample=Image.Resampling.BICUBIC, fillcolor=(0, 0, 0)),
        "brighter": photo.point(lambda v: min(255, int(v * 1.08 + 6))),
    }


def test_the_stored_thumbnail_keeps_the_aspect_and_reads_back(photo) -> None:
    pixels = thumb_pixels(_thumb(photo))
    assert pixels is not None and max(pixels.shape) == THUMB_LONG_SIDE
    assert pixels.shape[1] / pixels.shape[0] == pytest.approx(photo.width / photo.height, rel=0.05)
    assert thumb_pixels(pack_thumb(pixels)) is not None and np.array_equal(thumb_pixels(pack_thumb(pixels)), pixels)
    assert thumb_pixels(bytes(1024)) is None  # the 32x32 layout of an older version: no evidence
    assert thumb_pixels(None) is None


@pytest.mark.parametrize("kind", list(_copies(Image.new("RGB", (8, 8)))))
def test_copies_verify_as_one_capture(photo, kind) -> None:
    original = thumb_pixels(_thumb(photo))
    copy = thumb_pixels(_thumb(_copies(photo)[kind], 70))
    assert original is not None and copy is not None
    verifier = Verifier()
    for a, b in ((original, copy), (copy, original)):
        result = verifier.verify(a, b)
        assert result.verdict == COPY, (kind, result)


def test_a_stereo_pair_is_two_captures() -> None:
    left, right = (Image.open(DATA / f"motorcycle_{side}.png").convert("RGB") for side in ("left", "right"))
    a, b = thumb_pixels(_thumb(left)), thumb_pixels(_thumb(right))
    assert a is not None and b is not None
    result = Verifier().verify(a, b)
    assert result.verdict == SIBLING, result


def test_a_changed_scene_is_two_captures(photo) -> None:
    """The same frame with an object moved: aligned, but something changed."""
    changed = photo.copy()
    w, h = photo.size
    patch = photo.crop((w // 8, h // 8, w // 8 + w // 5, h // 8 + h // 5))
    changed.paste(patch, (w // 2, h // 2))
    a, b = thumb_pixels(_thumb(photo)), thumb_pixels(_thumb(changed))
    assert a is not None and b is not None
    assert Verifier().verify(a, b).verdict == SIBLING


def test_a_kept_cache_computes_each_thumbnail_once_across_calls(photo) -> None:
    """The daemon decides the tiers once per commit batch with the catalog's one cache: files arriving one by one
    cost the keypoints of one call over all their pairs, with the same verdicts; a thumbnail read again (a new
    array, the same pixels) is found, a changed file's new thumbnail is computed."""
    copies = _copies(photo)
    arrival = [_thumb(photo), _thumb(photo, 70), _thumb(copies["mirror"]), _thumb(copies["brighter"])]
    kept, whole = KeypointCache(), KeypointCache()
    one_by_one = []
    for i, new in enumerate(arrival[1:], 1):
        one_by_one += tiers(["phash"] * i, [(None, t) for t in arrival[:i]], [(None, new)] * i, kept)
    pairs = [(a, new) for i, new in enumerate(arrival) for a in arrival[:i]]
    assert one_by_one == tiers(["phash"] * len(pairs), [(None, a) for a, _ in pairs], [(None, b) for _, b in pairs],
                               whole)  # fmt: skip
    assert kept.computed == whole.computed >= len(arrival) and len(kept) == kept.computed
    assert all(tier == DUPLICATE for tier, _ in one_by_one)
    again = Verifier(cache=kept).verify(thumb_pixels(arrival[0]), thumb_pixels(_thumb(photo, 70)))
    assert kept.computed == whole.computed and again == Verifier().verify(
        thumb_pixels(arrival[0]), thumb_pixels(arrival[1]))  # fmt: skip
    changed = photo.copy()
    changed.paste((0, 0, 255), (10, 10, 60, 60))
    Verifier(cache=kept).verify(thumb_pixels(arrival[0]), thumb_pixels(_thumb(changed)))
    assert kept.computed > whole.computed


def test_a_bounded_cache_drops_the_least_recently_used(photo) -> None:
    """Within its byte budget the cache keeps the thumbnails used last: a budget for two of three thumbnails,
    three clear copies of one photo (each pair settled on the unmirrored keypoints)."""
    copies = _copies(photo)
    a, b, c = (thumb_pixels(_thumb(image, 70)) for image in (photo, copies["q70 half"], copies["brighter"]))
    assert a is not None and b is not None and c is not None
    sizes = []
    for x in (a, b, c):
        alone = KeypointCache()
        Verifier(cache=alone).verify(x, x)
        sizes.append(alone.nbytes)
    cache = KeypointCache(sum(sizes) - min(sizes))
    verifier = Verifier(cache=cache)
    for pair, computed in (((a, b), 2), ((a, c), 3), ((a, c), 3), ((a, b), 4)):  # b dropped for c, then a again
        assert verifier.verify(*pair).verdict == COPY
        assert cache.computed == computed and len(cache) == 2 and cache.nbytes <= cache.budget


def test_the_block_figures_are_numpys() -> None:
    """The change's block means, wholly valid blocks and 99th percentile are computed by slices and one partition
    (`verify._blocks`, `_percentile_99`) to the last bit of what numpy's general routines give, so the evidence
    stays the same: on thumbnail-sized arrays of odd sizes and on samples of every length up to 800."""
    rng = np.random.default_rng(7)
    for height, width in ((96, 128), (128, 85), (101, 127), (72, 128), (5, 9)):
        difference = (rng.random((height, width)) ** 3 * 80).astype(np.float32)
        valid = rng.random((height, width)) > 0.02
        difference[~valid] = 0
        rows, cols = height // 4 * 4, width // 4 * 4
        cells = (rows // 4, 4, cols // 4, 4)
        blocks, whole = _blocks(difference, valid)
        assert np.array_equal(blocks, difference[:rows, :cols].reshape(cells).mean(axis=(1, 3)))
        assert np.array_equal(whole, valid[:rows, :cols].reshape(cells).all(axis=(1, 3))) and whole.any()
    for count in range(1, 801):
        values = (rng.random(count) ** 2 * 60).astype(np.float32)
        assert _percentile_99(values) == float(np.percentile(values, 99)), count


def test_tiers_use_the_verification_where_metadata_is_silent(photo) -> None:
    original, mirror = _thumb(photo), _thumb(_copies(photo)["mirror"])
    left, right = (_thumb(Image.open(DATA / f"motorcycle_{side}.png")) for side in ("left", "right"))
    same_time = Capture(time="2024:06:01 18:30:12", subsec="12")
    old_layout = bytes(1024)
    decided = tiers(["cnn", "phash", "cnn", "phash"],
                    [(None, original), (None, left), (same_time, left), (None, old_layout)],
                    [(None, mirror), (None, right), (same_time, right), (None, original)])  # fmt: skip
    assert decided[0][0] == DUPLICATE and decided[0][1].startswith("pixels verified")
    assert decided[1][0] == SIMILAR and decided[1][1].startswith("pixels not one capture")
    assert decided[2] == (DUPLICATE, "same capture time 2024:06:01 18:30:12.12")  # metadata decides first
    assert decided[3] == (DUPLICATE, "")  # a record of the older layout: no pixel evidence until it changes
    # the verdict does not depend on which file came first (the daemon and the scan meet pairs in other orders)
    assert tiers(["cnn"], [(None, right)], [(None, left)]) == [decided[1]]
    shown = evidence_of((None, left), (None, right), "cnn")
    assert shown["pixels"] == "not one capture" and shown["tier"] == SIMILAR and shown["pixel_detail"]


def test_a_picture_with_too_little_structure_is_compared_in_place() -> None:
    """A flat or blurred picture has too few keypoints to align: its copies (re-encoded, mirrored) are compared in
    place and verified, a version of it where something moved is not; another aspect gives no verdict."""
    flat = Image.radial_gradient("L").resize((96, 96)).convert("RGB")
    a, b = thumb_pixels(_thumb(flat)), thumb_pixels(_thumb(flat, 70))
    mirrored = thumb_pixels(_thumb(flat.transpose(Image.Transpose.FLIP_LEFT_RIGHT), 70))
    moved = flat.copy()
    moved.paste((40, 40, 40), (10, 30, 40, 60))  # a dark thing that was not there
    other = thumb_pixels(_thumb(moved))
    wide = thumb_pixels(_thumb(flat.resize((144, 96))))
    assert a is not None and b is not None and mirrored is not None and other is not None and wide is not None
    verifier = Verifier()
    for copy in (b, mirrored):
        found = verifier.verify(a, copy)
        assert found is not None and found.direct and found.verdict == COPY, found
    found = verifier.verify(a, other)
    assert found is not None and found.direct and found.verdict == SIBLING, found
    assert verifier.verify(a, wide) is None
    decided = tiers(["phash", "phash"], [(None, _thumb(flat))] * 2, [(None, _thumb(flat, 70)), (None, _thumb(moved))])
    assert [tier for tier, _ in decided] == [DUPLICATE, SIMILAR]
    assert "compared in place" in decided[1][1]
    assert evidence_of((None, _thumb(flat)), (None, _thumb(flat, 70)), "phash")["pixels"] == "one capture"
