"""Planning of user actions (dedupd.service.actions.plan) and which XMP sidecars go with an image."""

from pathlib import Path

from dedupd.service.actions import plan, sidecars_of


def _record(digest: str, inode: int, *, protected: bool = False) -> dict[str, object]:
    return {"size": 10, "mtime_ns": 1, "dev": 1, "inode": inode, "digest": digest, "protected": protected}


def test_the_keep_policy_decides_and_protected_or_unindexed_files_are_refused() -> None:
    groups = [["/r/a.jpg", "/r/b.jpg", "/ref/c.jpg", "/r/gone.jpg"], ["/r/x.jpg", "/r/y.jpg"]]
    records = {"/r/a.jpg": _record("aa", 1), "/r/b.jpg": _record("bb", 2),
               "/ref/c.jpg": _record("aa", 3, protected=True), "/r/gone.jpg": None, "/r/x.jpg": _record("xx", 4),
               "/r/y.jpg": _record("yy", 5)}
    planned = plan("trash", groups, {"/r/b.jpg", "/ref/c.jpg", "/r/gone.jpg"}, records)
    assert planned.groups == 1  # the second group has nothing proposed
    assert [(s.path, s.keeper, s.refused) for s in planned.steps] == [
        ("/r/b.jpg", "/r/a.jpg", None),
        ("/ref/c.jpg", "/r/a.jpg", "under a protected root"),
        ("/r/gone.jpg", "/r/a.jpg", "not in the index (changed or removed since it was indexed)"),
    ]


def test_links_are_only_for_byte_identical_members_not_yet_linked() -> None:
    groups = [["/r/a.jpg", "/r/same.jpg", "/r/other.jpg", "/r/linked.jpg"]]
    records = {"/r/a.jpg": _record("aa", 1), "/r/same.jpg": _record("aa", 2), "/r/other.jpg": _record("bb", 3),
               "/r/linked.jpg": _record("aa", 1)}
    planned = plan("hardlink", groups, {"/r/same.jpg", "/r/other.jpg", "/r/linked.jpg"}, records)
    assert [s.path for s in planned.steps] == ["/r/same.jpg"]
    assert planned.skipped == [{"path": "/r/other.jpg", "reason": "not byte-identical to /r/a.jpg"},
                               {"path": "/r/linked.jpg", "reason": "already a hard link to /r/a.jpg"}]
    assert planned.steps[0].sidecars == ()  # a linked file stays where it is, and so does its sidecar


def test_sidecars_go_with_their_image_unless_shared(tmp_path: Path) -> None:
    for name in ("IMG_1.jpg", "IMG_1.jpg.xmp", "IMG_1.xmp", "IMG_2.jpg", "IMG_2.CR2", "IMG_2.xmp", "IMG_3.jpg",
                 "IMG_3.JPG.xmp"):
        (tmp_path / name).write_bytes(b"x")
    assert sidecars_of(str(tmp_path / "IMG_1.jpg")) == (str(tmp_path / "IMG_1.jpg.xmp"), str(tmp_path / "IMG_1.xmp"))
    assert sidecars_of(str(tmp_path / "IMG_2.jpg")) == ()  # IMG_2.xmp also describes IMG_2.CR2, which stays
    assert sidecars_of(str(tmp_path / "IMG_3.jpg")) == ()  # another image's sidecar (case matters on Linux)
