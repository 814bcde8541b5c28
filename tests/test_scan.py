"""`dedupd scan`'s byte-copy path: a file with the bytes of one encoded before it is read, not decoded,
and what the scan keeps of it is what a decode of it gives."""

import shutil
from pathlib import Path

from PIL import Image

from dedupd.imaging.cnn import resolve_model
from dedupd.imaging.encode import encode_path
from dedupd.scan import deal_by_component, scan_directory, submission_order
from dedupd.search.matcher import MatcherSettings


def test_pairs_that_share_a_file_are_dealt_to_one_thread() -> None:
    # Components: {0, 1, 2} (3 pairs, chained through 1), {3, 4} (1 pair), {5, 6, 7} (2 pairs).
    pairs = [(0, 1), (3, 4), (5, 6), (1, 2), (6, 7), (0, 2)]
    runs = deal_by_component(pairs, 2)
    assert sorted(k for run in runs for k in run) == list(range(len(pairs)))  # every pair once
    assert runs == [[0, 3, 5], [2, 4, 1]]  # the largest component first, then to the run with fewest pairs
    for run in runs:
        files = {f for k in run for f in pairs[k]}
        assert all(not files & {f for k in other for f in pairs[k]} for other in runs if other is not run)
    assert deal_by_component(pairs, 1) == [[0, 3, 5, 2, 4, 1]]  # component by component
    assert deal_by_component(pairs[:1], 4) == [[0]]  # no empty runs


def test_submission_order_puts_later_files_of_a_size_after_every_first() -> None:
    order, later = submission_order([10, 20, 10, 30, 20, 10])
    assert order == [0, 1, 3, 2, 4, 5]
    assert later == {2: 0, 4: 1, 5: 0}


def test_a_byte_copy_is_not_decoded_and_keeps_the_record_a_decode_gives(tmp_path: Path, photos: list[Path]) -> None:
    with Image.open(photos[0]) as photo:
        photo = photo.convert("RGB")
    photo.save(tmp_path / "a.jpg", quality=90, comment=b"aaaa")
    photo.save(tmp_path / "e.jpg", quality=90, comment=b"eeee")  # same size, other bytes: must be decoded
    shutil.copyfile(tmp_path / "a.jpg", tmp_path / "b.jpg")
    with Image.open(photos[1]) as other:
        other.convert("RGB").save(tmp_path / "c.png")
    assert (tmp_path / "a.jpg").stat().st_size == (tmp_path / "e.jpg").stat().st_size

    result = scan_directory(tmp_path, MatcherSettings.defaults(), workers=2)

    assert result.reused == 1 and result.encoded == 4 and not result.skipped
    files = {f.path.name: f for f in result.files}
    decoded = encode_path(tmp_path / "b.jpg", cnn_spec=resolve_model(None)).encoding  # as the scan decodes
    copy = files["b.jpg"]
    assert copy.path == tmp_path / "b.jpg" and copy.size == (tmp_path / "b.jpg").stat().st_size
    assert (copy.pixels, copy.capture, copy.thumb) == (decoded.width * decoded.height, decoded.capture, decoded.thumb)
    pairs = {frozenset((result.files[p.first].path.name, result.files[p.second].path.name)): p for p in result.pairs}
    assert pairs[frozenset(("a.jpg", "b.jpg"))].method == "exact"
    # Its digest, hashes and embedding are the original's: every pair it has is the original's pair.
    for third in ("e.jpg", "c.png"):
        with_copy, with_original = pairs.get(frozenset(("b.jpg", third))), pairs.get(frozenset(("a.jpg", third)))
        assert (with_copy is None) == (with_original is None), third
        if with_copy is not None and with_original is not None:
            assert (with_copy.method, with_copy.score, with_copy.tier, with_copy.evidence) == (
                with_original.method, with_original.score, with_original.tier, with_original.evidence)
    assert frozenset(("a.jpg", "e.jpg")) in pairs  # the same pixels under another comment: decoded, matched


def test_the_pairs_and_verdicts_do_not_depend_on_the_workers(tmp_path: Path, photos: list[Path]) -> None:
    """With more workers the CNN embeds in its thread while more files decode and the tiers are decided in as
    many threads: every pair, score, tier and evidence is the one a single worker finds."""
    for number, source in enumerate(photos[:3]):
        with Image.open(source) as photo:
            photo = photo.convert("RGB")
        photo.save(tmp_path / f"{number}.jpg", quality=92)
        photo.resize((photo.width // 2, photo.height // 2)).save(tmp_path / f"{number}_half.jpg", quality=80)
        photo.crop((0, 0, photo.width * 9 // 10, photo.height * 9 // 10)).save(tmp_path / f"{number}_crop.png")
        photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(tmp_path / f"{number}_flip.jpg", quality=85)

    def found(workers: int) -> dict[frozenset[str], tuple[str, float, str, str]]:
        result = scan_directory(tmp_path, MatcherSettings.defaults(), workers=workers)
        assert result.encoded == 12 and not result.skipped
        return {frozenset((result.files[p.first].path.name, result.files[p.second].path.name)):
                (p.method, round(p.score, 4), p.tier, str(p.evidence)) for p in result.pairs}  # fmt: skip

    one = found(1)
    assert len(one) >= 9  # each photo with its three edits at least: the threads have pairs to share
    assert found(3) == one
