"""A camera card (tests/fixtures/camera_card.py: RAW+JPEG pairs, sidecars, a Live Photo, a video, a JPEG XL)
and a copy of one exposure made elsewhere, through `dedupd scan` and through a real daemon: the pair is one
capture set, the outside copy is its duplicate (the set kept whole, the copy proposed), a pair alone is no
group, and nothing of the card is reported as a broken file."""

import json
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
    reported = {str(Path(r["file"]).relative_to(library)) for r in reports}
    assert reported <= {COPY}  # a RAW and its JPEG are never reported as duplicates of each other
