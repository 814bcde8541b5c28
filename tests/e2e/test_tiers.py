"""Both tiers end to end: a real daemon and `dedupd scan` on real burst frames, stereo and static-scene frames
and their copies (tests/fixtures/captures.py) agree on the duplicate groups, the similar groups and the keepers."""

import json
import shutil
import subprocess
import sys
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures import captures

pytestmark = pytest.mark.e2e


def _pairs(groups: list[list[dict[str, Any]]]) -> set[frozenset[str]]:
    return {frozenset((a["path"], b["path"])) for group in groups for a, b in combinations(group, 2)}


def test_daemon_and_scan_agree_on_both_tiers_and_the_keepers(tmp_path: Path, daemon_factory) -> None:
    source = captures.cached()
    library = tmp_path / "Pictures"
    library.mkdir()
    for name in captures.build(source):
        shutil.copy2(source / name, library / name)  # copy2 keeps the mtimes the keep policy reads
    daemon = daemon_factory([library])
    daemon.wait_idle()
    duplicates = daemon.ctl_json("duplicates")["groups"]
    similar = daemon.ctl_json("similar")
    plan = daemon.ctl_json("to-remove")
    query = daemon.ctl_json("query", str(library / "bikes_140.jpg"))
    assert daemon.stop() == 0
    scan = json.loads(subprocess.run([sys.executable, "-m", "dedupd", "scan", str(library), "--json"],
                                     capture_output=True, text=True, check=True).stdout)  # fmt: skip
    assert duplicates and similar["enabled"] and similar["groups"]
    assert _pairs(duplicates) == _pairs(scan["groups"])
    assert _pairs(similar["groups"]) == _pairs(scan["similar"])
    assert sorted(g["keep"][0] for g in plan["groups"]) == sorted(group[0]["path"] for group in scan["groups"])
    tiers = {Path(m["path"]).name: m["tier"] for m in query["matches"]}
    assert tiers["bikes_140_stripped.jpg"] == "duplicate" and tiers["bikes_150.jpg"] == "similar"
    assert str(library / "bikes_140.jpg") not in plan["files"]  # the camera original is kept
