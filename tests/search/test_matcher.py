"""dedupd's matcher on real photographs: orientation, mirrors, edits are caught; look-alikes are not.

The edited copies are made here from scikit-image's photographs, so thresholds and per-kind recall are
pinned by a small, deterministic fixture set: a regression in decoding, hashing, the CNN input or the
fusion rule fails here.
"""

import io
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

from dedupd.scan import ScanResult, scan_directory
from dedupd.search.matcher import MatcherSettings, decide

EXIF_ORIENTATION = 0x0112


def _exif6(image: Image.Image, path: Path) -> None:
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    image.transpose(Image.Transpose.ROTATE_90).save(path, "JPEG", quality=92, exif=exif)


def _transposed_copy(image: Image.Image, path: Path) -> None:
    """What `exif_transpose` makes of the exif6 file: upright pixels, no tag."""
    buffer = io.BytesIO()
    _exif6(image, buffer)  # type: ignore[arg-type]
    with Image.open(buffer) as sideways:
        ImageOps.exif_transpose(sideways).save(path, "JPEG", quality=92)


def _crop(image: Image.Image, path: Path) -> None:
    w, h = image.size
    image.crop((w // 20, h // 20, w - w // 20, h - h // 20)).save(path, "JPEG", quality=92)


EDITS: dict[str, Callable[[Image.Image, Path], None]] = {
    "exif6": _exif6,
    "transposed": _transposed_copy,
    "rot90": lambda im, p: im.transpose(Image.Transpose.ROTATE_90).save(p, "JPEG", quality=92),
    "rot270": lambda im, p: im.transpose(Image.Transpose.ROTATE_270).save(p, "JPEG", quality=92),
    "mirror": lambda im, p: im.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(p, "JPEG", quality=92),
    "q70": lambda im, p: im.save(p, "JPEG", quality=70),
    "half": lambda im, p: im.resize((im.width // 2, im.height // 2), Image.Resampling.LANCZOS).save(p, "JPEG"),
    "bright": lambda im, p: ImageEnhance.Brightness(im).enhance(1.08).save(p, "JPEG", quality=92),
    "png": lambda im, p: im.save(p, "PNG"),
    "crop90": _crop,
}


def _landscape(path: Path) -> Image.Image:
    with Image.open(path) as image:
        rgb = image.convert("RGB")
    rgb.thumbnail((480, 480))
    return rgb.crop((0, 0, rgb.width, rgb.height * 3 // 4))


def _rot25(image: Image.Image, path: Path) -> None:
    image.rotate(25, resample=Image.Resampling.BILINEAR).save(path, "JPEG", quality=90)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, photos: list[Path]) -> tuple[Path, dict[str, tuple[str, str]]]:
    """6 photos x (original + every edit), plus 25-degree rotations of 5 *other* photos (distractors)."""
    root = tmp_path_factory.mktemp("matcher")
    truth: dict[str, tuple[str, str]] = {}  # file -> (scene, kind)
    for scene, source in enumerate(photos[:6]):
        image = _landscape(source)
        original = root / f"s{scene}_orig.jpg"
        image.save(original, "JPEG", quality=92)
        truth[original.name] = (f"s{scene}", "orig")
        shutil.copy(original, root / f"s{scene}_copy.jpg")
        truth[f"s{scene}_copy.jpg"] = (f"s{scene}", "copy")
        for kind, make in EDITS.items():
            name = f"s{scene}_{kind}.{'png' if kind == 'png' else 'jpg'}"
            make(image, root / name)
            truth[name] = (f"s{scene}", kind)
    for scene, source in enumerate(photos[6:11], start=6):
        name = f"d{scene}_rot25.jpg"
        _rot25(_landscape(source), root / name)
        truth[name] = (f"d{scene}", "rot25")
    return root, truth


def _pairs(result: ScanResult, root: Path) -> set[frozenset[str]]:
    groups = result.to_json(root)["groups"]
    return {frozenset((Path(a["path"]).name, Path(b["path"]).name))
            for group in groups for i, a in enumerate(group) for b in group[i + 1:]}


@pytest.fixture(scope="module")
def default_result(corpus) -> ScanResult:
    root, _ = corpus
    return scan_directory(root, MatcherSettings.defaults(), workers=2)


def test_every_edit_kind_is_caught_and_nothing_else(corpus, default_result: ScanResult) -> None:
    root, truth = corpus
    found = _pairs(default_result, root)
    false = {pair for pair in found if len({truth[name][0] for name in pair}) > 1}
    assert not false, f"false pairs: {sorted(map(sorted, false))}"
    for kind in [*EDITS, "copy"]:
        missed = [s for s in range(6) if frozenset((f"s{s}_orig.jpg", _name(truth, s, kind))) not in found]
        assert not missed, f"{kind}: scenes {missed} not reported as duplicates of their original"


def _name(truth: dict[str, tuple[str, str]], scene: int, kind: str) -> str:
    return next(name for name, (s, k) in truth.items() if s == f"s{scene}" and k == kind)


def test_rotated_look_alikes_with_black_corners_stay_apart(corpus, default_result: ScanResult) -> None:
    root, _ = corpus
    grouped = {Path(m["path"]).name for g in default_result.to_json(root)["groups"] for m in g}
    assert not {name for name in grouped if name.startswith("d")}


def test_methods_reported(corpus, default_result: ScanResult) -> None:
    root, _ = corpus
    methods = {m["method"] for g in default_result.to_json(root)["groups"] for m in g}
    assert {"exact", "phash"} <= methods


def test_without_cnn_orientation_and_mirrors_still_match(corpus) -> None:
    root, truth = corpus
    found = _pairs(scan_directory(root, MatcherSettings.defaults().without_cnn(), workers=1), root)
    assert all(len({truth[n][0] for n in pair}) == 1 for pair in found)
    for kind in ("exif6", "transposed", "rot90", "rot270", "mirror", "copy"):
        assert all(frozenset((f"s{s}_orig.jpg", _name(truth, s, kind))) in found for s in range(6)), kind


def test_decide_precedence_and_confirmation() -> None:
    settings = MatcherSettings(hash_threshold=10, hash_confirm_similarity=0.5, cnn_min_similarity=0.62)
    exact = np.array([True, False, False, False, False])
    distances = np.array([0, 3, 3, 30, 30])
    similarities = np.array([1.0, 0.9, 0.1, 0.7, 0.3])
    is_exact, is_phash, is_cnn = decide(exact, distances, similarities, settings)
    assert is_exact.tolist() == [True, False, False, False, False]
    assert is_phash.tolist() == [False, True, False, False, False]  # close hash, but the CNN must agree
    assert is_cnn.tolist() == [False, False, False, True, False]
    _, hash_only, none = decide(exact, np.array([0, 2, 3, 30, 1]), None, settings)
    assert hash_only.tolist() == [False, True, False, False, True] and not none.any()
