"""Planning of user actions (dedupd.service.actions.plan) and which of an image's companions (its record's sidecars
and motion file) go with it."""

from pathlib import Path

from dedupd.companions import attached
from dedupd.service.actions import plan


def _record(digest: str, inode: int, *, protected: bool = False, companions: tuple[str, ...] = ()
            ) -> dict[str, object]:
    """A record as the daemon gives it; `companions` as dedupd.companions.attached finds them."""
    found = attached(companions[0], companions[1:]) if companions else []
    return {"size": 10, "mtime_ns": 1, "dev": 1, "inode": inode, "digest": digest, "protected": protected,
            "companions": [c.document() for c in found]}


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


def test_a_capture_set_stays_whole_when_the_user_keeps_one_of_its_files() -> None:
    """The user keeps the RAW (all else proposed): its JPEG, of one capture set with it, stays too; the outside
    copy goes. A set proposed whole goes whole."""
    raw, jpg, copy = "/c/IMG_1.CR3", "/c/IMG_1.JPG", "/e/IMG_1.JPG"
    records = {raw: {**_record("r", 1), "capture_set": raw}, jpg: {**_record("j", 2), "capture_set": raw},
               copy: {**_record("c", 3), "capture_set": None}}
    planned = plan("trash", [[raw, jpg, copy]], {jpg, copy}, records)
    assert [(s.path, s.keeper) for s in planned.steps] == [(copy, raw)]
    assert planned.skipped == [{"path": jpg, "reason": f"of one capture set with {raw}, which stays"}]
    planned = plan("trash", [[raw, jpg, copy]], {raw, jpg}, records)
    assert [(s.path, s.keeper) for s in planned.steps] == [(raw, copy), (jpg, copy)] and planned.skipped == []


def test_links_are_only_for_byte_identical_members_not_yet_linked() -> None:
    groups = [["/r/a.jpg", "/r/same.jpg", "/r/other.jpg", "/r/linked.jpg"]]
    records = {"/r/a.jpg": _record("aa", 1), "/r/same.jpg": _record("aa", 2), "/r/other.jpg": _record("bb", 3),
               "/r/linked.jpg": _record("aa", 1)}
    planned = plan("hardlink", groups, {"/r/same.jpg", "/r/other.jpg", "/r/linked.jpg"}, records)
    assert [s.path for s in planned.steps] == ["/r/same.jpg"]
    assert planned.skipped == [{"path": "/r/other.jpg", "reason": "not byte-identical to /r/a.jpg"},
                               {"path": "/r/linked.jpg", "reason": "already a hard link to /r/a.jpg"}]
    assert planned.steps[0].companions == ()  # a linked file stays where it is, and so do its companions


def test_companions_go_with_their_image_and_a_shared_one_with_the_last_image_of_its_basename(tmp_path: Path) -> None:
    names = ("IMG_1.jpg", "IMG_1.jpg.xmp", "IMG_1.xmp", "IMG_2.jpg", "IMG_2.CR2", "IMG_2.xmp", "IMG_2.CR2.xmp",
             "IMG_3.HEIC", "IMG_3.MOV", "IMG_3.AAE", "IMG_4.CR3", "IMG_4.JPG", "IMG_4.xmp", "IMG_4.CR3.xmp", "k.jpg")
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    p = {name: str(tmp_path / name) for name in names}
    every = list(p.values())
    records = {p[name]: _record(name, n, companions=(p[name], *every)) for n, name in enumerate(names)}
    groups = [[p["k.jpg"], p[name]] for name in ("IMG_1.jpg", "IMG_2.jpg", "IMG_3.HEIC", "IMG_4.CR3", "IMG_4.JPG")]
    planned = plan("trash", groups, {p[n] for n in ("IMG_1.jpg", "IMG_2.jpg", "IMG_3.HEIC", "IMG_4.CR3", "IMG_4.JPG")},
                   records)
    assert {s.path: s.companions for s in planned.steps} == {
        p["IMG_1.jpg"]: (p["IMG_1.jpg.xmp"], p["IMG_1.xmp"]),
        p["IMG_2.jpg"]: (),  # IMG_2.xmp also describes IMG_2.CR2, which stays; IMG_2.CR2.xmp is the CR2's own
        p["IMG_3.HEIC"]: (p["IMG_3.AAE"], p["IMG_3.MOV"]),  # a Live Photo's motion file and Apple's sidecar
        p["IMG_4.CR3"]: (p["IMG_4.CR3.xmp"],),
        p["IMG_4.JPG"]: (p["IMG_4.xmp"],),  # the pair goes whole: the shared sidecar goes with its last image
    }
    assert planned.document()["steps"][0]["companions"] == [p["IMG_1.jpg.xmp"], p["IMG_1.xmp"]]
