"""A camera card (tests/fixtures/camera_card.py: RAW+JPEG pairs, sidecars, a Live Photo, a video, a JPEG XL)
and a copy of one exposure made elsewhere, through `dedupd scan` and through a real daemon: the pair is one
capture set, the outside copy is its duplicate (the set kept whole, the copy proposed), a pair alone is no
group, and nothing of the card is reported as a broken file."""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures import camera_card

pytestmark = pytest.mark.e2e


def _names(group: list[dict[str, Any]], root: Path) -> set[str]:
    return {str(Path(m["path"]).relative_to(root)) for m in group}


FIRST_SET = {"card/DCIM/100CANON/IMG_0001.DNG", "card/DCIM/100CANON/IMG_0001.JPG"}
COPY = "elsewhere/holiday/IMG_0001.JPG"


def test_scan_of_a_camera_card_groups_the_set_with_its_outside_copy(tmp_path: Path) -> None:
    camera_card.build(tmp_path)
    run = subprocess.run([sys.executable, "-m", "dedupd", "scan", str(tmp_path), "--recursive", "--json"],
                         capture_output=True, text=True, check=True)
    scan = json.loads(run.stdout)
    assert [_names(group, tmp_path) for group in scan["groups"]] == [FIRST_SET | {COPY}]
    kept = {str(Path(m["path"]).relative_to(tmp_path)) for m in scan["groups"][0] if "keep" in m}
    assert kept == FIRST_SET
    assert [(Path(s["path"]).name, s["reason"]) for s in scan["skipped"]] == [("MVI_0004.MP4", "video")]
    assert scan["companions"] == {"sidecar": 3, "motion": 1}
    attached = {str(Path(m["path"]).relative_to(tmp_path)): [(Path(c["path"]).name, c["kind"], c["shared"])
                                                           for c in m.get("companions", [])]
                for m in scan["groups"][0]}  # each member's sidecars, as the daemon's records have them
    dng, jpg = sorted(FIRST_SET)
    assert attached == {dng: [("IMG_0001.DNG.xmp", "sidecar", False), ("IMG_0001.xmp", "sidecar", True)],
                        jpg: [("IMG_0001.xmp", "sidecar", True)], COPY: []}
    text = subprocess.run([sys.executable, "-m", "dedupd", "scan", str(tmp_path), "--recursive"],
                          capture_output=True, text=True, check=True)
    assert "skipped " not in text.stderr  # no file of the card is listed as broken
    assert "(0 skipped, 1 videos, 3 sidecars, 1 motion files)" in text.stderr


def test_the_daemon_imports_a_camera_card_as_the_scan_does(tmp_path: Path, daemon_factory) -> None:
    library = tmp_path / "Pictures"
    camera_card.build(library)
    daemon = daemon_factory([library])
    daemon.wait_idle()
    groups = daemon.ctl_json("duplicates")["groups"]
    plan = daemon.ctl_json("to-remove")
    status = daemon.status()
    log = daemon.log_text()
    reports = daemon.reports()
    assert daemon.stop() == 0
    assert [_names(group["files"] if isinstance(group, dict) else group, library) for group in groups] == [
        FIRST_SET | {COPY}
    ]
    assert [str(Path(p).relative_to(library)) for p in plan["files"]] == [COPY]
    counts = status["counts"]
    assert counts["skipped"] == {"video": 1}
    assert (counts["sidecars"], counts["motion_files"]) == (3, 1)
    assert counts["indexed"] == 7  # 2 DNG, 2 JPG, HEIC, JPEG XL, the copy
    assert "skipped" not in log.replace("skipped\": {", "")  # nothing logged as skipped at the default level
    # A RAW and its JPEG are never reported as duplicates of each other; either may be reported with the outside
    # copy (as its duplicate, or the copy as theirs: whichever the daemon indexed later).
    pairs = {(str(Path(r["file"]).relative_to(library)), str(Path(m["path"]).relative_to(library)))
             for r in reports for m in r["matches"]}
    assert all(COPY in pair and len(set(pair) & FIRST_SET) == 1 for pair in pairs), pairs


def _companions(daemon: Any, path: Path) -> list[tuple[str, str, bool]]:
    found = daemon.ctl_json("query", str(path))["companions"]
    return [(Path(c["path"]).name, c["kind"], c["shared"]) for c in found]


def test_trash_and_undo_take_an_images_sidecars_and_motion_file_along(tmp_path: Path, daemon_factory: Any,
                                                                     user: Any) -> None:
    """The card's companions are attached to their images in the daemon's records (`query`), and `resolve` moves
    them with their image to the trash and `undo` puts them back, nothing decoded again: the RAW's own
    `.CR3.xmp`, the pair's shared `.xmp` (with the pair's last image), the Live Photo's `.AAE` and `.MOV`."""
    library = tmp_path / "Pictures"
    paths = camera_card.build(library)
    card = paths["raw1"].parent
    # The first RAW under a CR3 name with its sidecar so named (no package ships a real CR3: a DNG's bytes; the
    # companion rule reads names, the decoder reads bytes, so the pair is still one set).
    raw = card / "IMG_0001.CR3"
    paths["raw1"].rename(raw)
    (card / "IMG_0001.DNG.xmp").rename(card / "IMG_0001.CR3.xmp")
    keep = library / "keep" / "IMG_0003.HEIC"  # an older byte copy of the Live Photo's still: it is kept
    keep.parent.mkdir()
    keep.write_bytes(paths["heic"].read_bytes())
    os.utime(keep, (1_600_000_000, 1_600_000_000))
    daemon = daemon_factory([library])
    daemon.wait_idle()
    assert _companions(daemon, raw) == [("IMG_0001.CR3.xmp", "sidecar", False), ("IMG_0001.xmp", "sidecar", True)]
    assert _companions(daemon, paths["jpg1"]) == [("IMG_0001.xmp", "sidecar", True)]
    assert _companions(daemon, paths["heic"]) == [("IMG_0003.AAE", "sidecar", True), ("IMG_0003.MOV", "motion", True)]
    assert "with IMG_0003.AAE (sidecar), IMG_0003.MOV (motion)" in daemon.ctl("query", str(paths["heic"])).stdout
    before, decodes = user.tree(library), daemon.status()["counts"]["decodes"]
    reports = {r["file"]: r.get("companions", []) for r in daemon.reports()}
    assert set(reports) & {str(paths["heic"]), str(keep)}  # one of the two byte copies is reported: the later one
    if str(paths["heic"]) in reports:  # the card's still, with those of its companions indexed before the report
        assert {Path(c["path"]).name for c in reports[str(paths["heic"])]} <= {"IMG_0003.AAE", "IMG_0003.MOV"}

    trashed = daemon.ctl_json("resolve", "--trash")  # the policy: the outside copy and the newer HEIC go
    assert trashed["refused"] == []
    assert sorted((Path(d["path"]).name, Path(d.get("companion_of", "")).name) for d in trashed["done"]) == [
        ("IMG_0001.JPG", ""), ("IMG_0003.AAE", "IMG_0003.HEIC"), ("IMG_0003.HEIC", ""),
        ("IMG_0003.MOV", "IMG_0003.HEIC")]
    assert set(user.trashed()) == {d["path"] for d in trashed["done"]}
    daemon.ctl_json("undo")
    assert user.tree(library) == before and user.trashed() == {}

    pair = daemon.ctl_json("resolve", "--trash", "--keep", str(paths["copy"]))  # the user keeps the copy instead
    assert pair["refused"] == []
    assert sorted(Path(d["path"]).name for d in pair["done"]) == [
        "IMG_0001.CR3", "IMG_0001.CR3.xmp", "IMG_0001.JPG", "IMG_0001.xmp"]
    assert not any(p.exists() for p in (raw, card / "IMG_0001.CR3.xmp", card / "IMG_0001.xmp", paths["jpg1"]))
    daemon.wait_idle()
    assert daemon.ctl_json("query", str(paths["copy"]))["companions"] == []
    daemon.ctl_json("undo")
    assert user.tree(library) == before and user.trashed() == {}
    daemon.wait_idle()
    assert _companions(daemon, raw) == [("IMG_0001.CR3.xmp", "sidecar", False), ("IMG_0001.xmp", "sidecar", True)]
    assert daemon.status()["counts"]["decodes"] == decodes  # everything came back unchanged: not decoded again

    raw_kept = daemon.ctl_json("resolve", "--trash", "--keep", str(raw))  # the user keeps the RAW: its JPEG too
    assert [Path(d["path"]).name for d in raw_kept["done"]] == ["IMG_0001.JPG"]  # the outside copy
    assert Path(raw_kept["done"][0]["path"]).parent.name == "holiday"
    assert raw_kept["skipped"] == [
        {"path": str(paths["jpg1"]), "reason": f"of one capture set with {raw}, which stays"}]
    daemon.ctl_json("undo")
    assert user.tree(library) == before
    assert daemon.stop() == 0
