"""Capture sets (search.sets): one exposure's files are one unit in the grouping (search.groups.partition)
and the keep policy (search.keep): never proposed against each other, matched as one, kept or proposed whole."""

from dedupd.companions import basename_key
from dedupd.records import Capture
from dedupd.search.groups import partition
from dedupd.search.keep import Candidate, choose, keepers
from dedupd.search.sets import capture_sets


def test_one_exposure_is_one_folder_one_basename_and_a_raw_or_a_heif_beside_a_jpeg() -> None:
    paths = {1: "/card/IMG_1.CR3", 2: "/card/img_1.jpg", 3: "/copies/IMG_1.JPG", 4: "/card/x.jpg",
             5: "/card/x.png", 6: "/card/IMG_2.HEIC", 7: "/card/IMG_2.JPG", 8: "/card/IMG_1.CR3.xmp"}
    formats = {1: "CR3", 2: "JPEG", 3: "JPEG", 4: "JPEG", 5: "PNG", 6: "HEIF", 7: "JPEG", 8: None}
    sets = capture_sets({k: v for k, v in paths.items() if k != 8}, formats)
    assert sets == {1: 1, 2: 1, 6: 6, 7: 6}  # the outside copy (3) and a conversion beside its JPEG (4, 5): not
    assert basename_key(paths[8]) == basename_key(paths[1])


def test_a_raw_and_a_differently_named_jpeg_of_its_capture_in_its_folder_are_one_set() -> None:
    paths = {1: "/card/DSC_1.NEF", 2: "/card/DSC_1_edit.JPG", 3: "/card/other.JPG", 4: "/elsewhere/a.JPG"}
    formats = {1: "NEF", 2: "JPEG", 3: "JPEG", 4: "JPEG"}
    same = {1: "t1", 2: "t1", 3: "t1", 4: "t1"}
    assert capture_sets(paths, formats, same) == {1: 1, 2: 1}  # one rendering per RAW; nothing across folders


def test_a_set_alone_is_no_group_and_an_outside_copy_joins_the_whole_set() -> None:
    units = {1: 1, 2: 1}  # 1 = the RAW, 2 = its JPEG
    assert partition([(1, 2)], units=units) == []
    assert partition([(2, 3)], units=units) == [[1, 2, 3]]  # the RAW matched nothing itself
    assert partition([(2, 3)], cannot=[(1, 2)], units=units) == [[1, 2, 3]]  # never kept apart
    assert partition([(1, 2), (3, 4), (2, 3)], units={1: 1, 2: 1, 3: 3, 4: 3}) == [[1, 2, 3, 4]]
    assert partition([(1, 2)]) == [[1, 2]]  # without sets: as before


def _camera(fmt: str) -> Capture:
    return Capture(format=fmt, time="2024:06:01 10:00:00", make="Canon", model="EOS R6")


def test_the_keep_policy_keeps_a_set_whole_over_a_larger_lone_copy() -> None:
    raw = Candidate("/card/IMG_1.CR3", 24_000_000, 1, _camera("CR3"), "/card/IMG_1.CR3")
    jpeg = Candidate("/card/IMG_1.JPG", 24_000_000, 1, _camera("JPEG"), "/card/IMG_1.CR3")
    upscaled = Candidate("/copies/IMG_1.JPG", 40_000_000, 0, _camera("JPEG"))
    ordered, why = choose([upscaled, jpeg, raw])
    assert {c.path for c in keepers(ordered)} == {raw.path, jpeg.path}
    assert ordered[-1] is upscaled and why == "a capture set, kept whole"


def test_two_copies_of_a_set_one_kept_whole_the_other_proposed_whole() -> None:
    def pair(folder: str, mtime: int) -> list[Candidate]:
        key = f"{folder}/IMG_1.CR3"
        kinds = (("CR3", "CR3"), ("JPG", "JPEG"))
        return [Candidate(f"{folder}/IMG_1.{ext}", 100, mtime, _camera(fmt), key) for ext, fmt in kinds]

    ordered, why = choose(pair("/b", 2) + pair("/a", 1))
    assert [c.path for c in keepers(ordered)] == ["/a/IMG_1.CR3", "/a/IMG_1.JPG"]
    assert {c.path for c in ordered[2:]} == {"/b/IMG_1.CR3", "/b/IMG_1.JPG"}
    assert why == "oldest"


def test_lone_files_keep_the_policy_they_had() -> None:
    big, small = Candidate("/x/b.jpg", 200, 5), Candidate("/x/a.jpg", 100, 1)
    ordered, why = choose([small, big])
    assert ordered == [big, small] and why == "most pixels (200 vs 100)"
    assert keepers(ordered) == [big]
