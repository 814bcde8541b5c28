"""A file moved out of a watched root (an unpaired IN_MOVED_FROM: watchdog holds it half a second to pair it)
leaves the running daemon's groups as a delete, without a rescan. A real daemon process, real renames."""

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e


def _members(daemon: Any) -> set[str]:
    return {m["path"] for group in daemon.ctl_json("duplicates")["groups"] for m in group}


def test_files_moved_out_of_the_root_leave_their_groups(tmp_path: Path, daemon_factory: Any,
                                                        photo_bytes: list[bytes]) -> None:
    root = tmp_path / "library"
    (root / "sub").mkdir(parents=True)
    (root / ".Trash-0" / "files").mkdir(parents=True)  # a per-volume trash inside the root: excluded, unwatched
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for i in range(2):
        (root / f"a{i}.jpg").write_bytes(photo_bytes[i])
        shutil.copyfile(root / f"a{i}.jpg", root / "sub" / f"b{i}.jpg")
    daemon = daemon_factory([root])
    daemon.wait_idle()
    assert _members(daemon) == {str(root / f"a{i}.jpg") for i in range(2)} | {
        str(root / "sub" / f"b{i}.jpg") for i in range(2)}
    subprocess.run(["mv", str(root / "sub" / "b0.jpg"), str(elsewhere)], check=True)  # out of the root
    daemon.wait_idle()
    assert _members(daemon) == {str(root / "a1.jpg"), str(root / "sub" / "b1.jpg")}
    subprocess.run(["mv", str(root / "sub" / "b1.jpg"), str(root / ".Trash-0" / "files")], check=True)
    daemon.wait_idle()
    assert _members(daemon) == set()
    assert daemon.status()["counts"]["indexed"] == 2
    assert daemon.stop() == 0
    assert "called when the thread is inactive" not in daemon.log_text()
