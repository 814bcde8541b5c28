"""`dedupctl resolve`, `undo` and `history` end to end: a real daemon, real files, the real freedesktop trash.

The acting user's home, trash and state dir are the test's own (HOME, XDG_DATA_HOME, XDG_STATE_HOME), so
nothing outside tmp_path is touched. Reflinks need a filesystem that has them: the test makes a loop-mounted
XFS image (root and mkfs.xfs needed, as in CI; skipped with the reason elsewhere).
"""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e


def _groups(daemon: Any) -> list[list[str]]:
    return sorted(sorted(m["path"] for m in g) for g in daemon.ctl_json("duplicates")["groups"])


def test_dry_run_trash_history_and_undo(daemon_factory: Any, user: Any, tmp_path: Path, photos: list[Path]) -> None:
    root = tmp_path / "library"
    daemon, files = user.started(daemon_factory, root, photos)
    groups = _groups(daemon)
    assert groups == sorted([sorted([str(files["a"]), str(files["a_copy"])]),
                             sorted([str(files["b"]), str(files["b_small"])])])
    before = user.tree(root)

    dry = daemon.ctl("resolve")  # a dry run by default
    assert "would trash 2 files from 2 groups" in dry.stdout
    assert str(files["a_copy"]) in dry.stdout and str(files["b_small"]) in dry.stdout
    assert user.tree(root) == before
    assert not (user.home / ".local" / "state" / "dedupd" / "actions").exists() or not list(
        (user.home / ".local" / "state" / "dedupd" / "actions").glob("*.jsonl"))

    decodes = daemon.status()["counts"]["decodes"]
    done = daemon.ctl_json("resolve", "--trash")
    assert sorted(d["path"] for d in done["done"]) == sorted(
        [str(files["a_copy"]), str(files["sidecar"]), str(files["b_small"])])
    assert done["refused"] == []
    trashed = user.trashed()
    assert set(trashed) == {str(files["a_copy"]), str(files["sidecar"]), str(files["b_small"])}
    for original, in_trash in trashed.items():
        assert not os.path.exists(original)
        assert Path(in_trash).read_bytes() == before[original][0]
    assert files["a"].exists() and files["b"].exists()
    daemon.wait_idle()
    assert _groups(daemon) == []

    history = daemon.ctl_json("history")["actions"]
    assert [(h["action"], h["op"], h["files"], h["finished"]) for h in history] == [
        (done["action"], "trash", 3, True)]
    assert done["action"] in daemon.ctl("history").stdout

    undone = daemon.ctl_json("undo")
    assert undone["action"] == done["action"] and len(undone["done"]) == 3
    assert user.tree(root) == before
    assert user.trashed() == {}
    daemon.wait_idle()
    assert _groups(daemon) == groups
    assert daemon.status()["counts"]["decodes"] == decodes  # put back unchanged: indexed from the journal
    assert daemon.ctl("undo", check=False).returncode == 1  # nothing left to undo


def test_move_to_and_hardlink(daemon_factory: Any, user: Any, tmp_path: Path, photos: list[Path]) -> None:
    root = tmp_path / "library"
    daemon, files = user.started(daemon_factory, root, photos)
    before = user.tree(root)

    linked = daemon.ctl_json("resolve", "--hardlink")  # only the byte-identical group can be linked
    assert [d["path"] for d in linked["done"]] == [str(files["a_copy"])]
    assert linked["refused"] == []
    assert [r["path"] for r in linked["skipped"]] == [str(files["b_small"])]
    assert "not byte-identical" in linked["skipped"][0]["reason"]
    assert os.stat(files["a_copy"]).st_ino == os.stat(files["a"]).st_ino
    assert files["a_copy"].read_bytes() == before[str(files["a_copy"])][0]
    assert daemon.ctl("undo").returncode == 0
    assert os.stat(files["a_copy"]).st_ino != os.stat(files["a"]).st_ino
    assert user.tree(root) == before
    daemon.wait_idle()

    target = tmp_path / "moved"
    alone = daemon.ctl("resolve", "--move-to", str(target), "--under", str(root / "small"), "--group",
                       str(files["b_small"]), check=False)  # under small/ its group has one member: no group
    assert alone.returncode == 1 and "is in no duplicate group" in alone.stderr
    moved = daemon.ctl_json("resolve", "--move-to", str(target), "--group", str(files["b"]))
    assert [(d["path"], d["dest"]) for d in moved["done"]] == [
        (str(files["b_small"]), str(target / "small" / "b_small.jpg"))]
    assert (target / "small" / "b_small.jpg").read_bytes() == before[str(files["b_small"])][0]
    assert files["a_copy"].exists()  # the other group was out of scope
    daemon.wait_idle()
    assert _groups(daemon) == [sorted([str(files["a"]), str(files["a_copy"])])]
    daemon.ctl("undo", moved["action"])
    assert user.tree(root) == before
    assert not (target / "small" / "b_small.jpg").exists()
    daemon.wait_idle()

    chosen = daemon.ctl_json("resolve", "--trash", "--keep", str(files["b_small"]))  # the user's pick, not the policy's
    assert [d["path"] for d in chosen["done"]] == [str(files["b"])] and files["b_small"].exists()
    daemon.ctl("undo")
    assert user.tree(root) == before
    similar = daemon.ctl("resolve", "--tier", "similar", "--trash", check=False)
    assert similar.returncode == 1 and "say which file to keep with --keep FILE" in similar.stderr


def test_a_file_changed_since_it_was_indexed_is_refused(daemon_factory: Any, user: Any, tmp_path: Path,
                                                        photos: list[Path]) -> None:
    root = tmp_path / "library"
    daemon, files = user.started(daemon_factory, root, photos)
    daemon.ctl("pause")  # the daemon does not see the changes yet: its records are the old ones
    data = bytearray(files["a_copy"].read_bytes())
    data[-3] ^= 0xFF  # same size, same mtime, other bytes
    stat = files["a_copy"].stat()
    files["a_copy"].write_bytes(bytes(data))
    os.utime(files["a_copy"], ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with files["b_small"].open("ab") as handle:
        handle.write(b"\0" * 10)  # other size

    run = daemon.ctl("resolve", "--trash", check=False)
    assert run.returncode == 1
    assert f"{files['a_copy']}: refused, its content changed since it was indexed" in run.stderr
    assert f"{files['b_small']}: refused, the file changed since it was indexed" in run.stderr
    assert files["a_copy"].read_bytes() == bytes(data) and files["b_small"].exists()
    assert user.trashed() == {}


# ------------------------------------------------------------------------------------------- reflink (XFS)
@pytest.fixture
def xfs(tmp_path: Path) -> Iterator[Path]:
    """A loop-mounted XFS with reflinks, made for the test."""
    if os.geteuid() != 0:
        pytest.skip("reflink test needs root to loop-mount an XFS image (CI runs as root)")
    if shutil.which("mkfs.xfs") is None:
        pytest.skip("reflink test needs mkfs.xfs (apt-get install xfsprogs)")
    image, mount = tmp_path / "xfs.img", tmp_path / "xfs"
    with image.open("wb") as handle:
        handle.truncate(320 << 20)  # XFS's minimum size; sparse
    mount.mkdir()
    subprocess.run(["mkfs.xfs", "-q", "-m", "reflink=1", str(image)], check=True)
    made = subprocess.run(["mount", "-o", "loop", str(image), str(mount)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot loop-mount here: {made.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def _shared_extents(path: Path) -> bool:
    run = subprocess.run(["filefrag", "-v", str(path)], capture_output=True, text=True, check=True)
    return "shared" in run.stdout


def test_reflink_and_the_topdir_trash_on_xfs(daemon_factory: Any, user: Any, xfs: Path, photos: list[Path]) -> None:
    root = xfs / "library"
    daemon, files = user.started(daemon_factory, root, photos)
    before = user.tree(root)
    reflinked = daemon.ctl_json("resolve", "--reflink", "--group", str(files["a"]))
    assert [d["path"] for d in reflinked["done"]] == [str(files["a_copy"])]
    copy_stat = files["a_copy"].stat()
    assert copy_stat.st_ino != files["a"].stat().st_ino and copy_stat.st_mtime_ns == before[str(files["a_copy"])][1]
    assert _shared_extents(files["a_copy"])
    assert user.tree(root) == before
    daemon.ctl("undo")
    assert not _shared_extents(files["a_copy"]) and user.tree(root) == before
    daemon.wait_idle()

    trashed = daemon.ctl_json("resolve", "--trash", "--group", str(files["b"]))
    trash = xfs / f".Trash-{os.getuid()}"
    assert [d["dest"] for d in trashed["done"]] == [str(trash / "files" / "b_small.jpg")]
    info = (trash / "info" / "b_small.jpg.trashinfo").read_text()
    assert "Path=library/small/b_small.jpg" in info.splitlines()  # relative to the top dir, as the spec says
    daemon.ctl("undo")
    assert user.tree(root) == before


# ------------------------------------------------------------------------------------------- SIGKILL
def _kill_and_undo(daemon: Any, root: Path, user: Any, rounds: int, seed: int) -> None:
    """Kill `resolve --trash` at random points; after each kill every file is in place or in the trash with
    its journal entry; then the daemon is killed and restarted too, and `undo` restores everything."""
    rng = random.Random(seed)
    before = user.tree(root)
    journal_dir = user.home / ".local" / "state" / "dedupd" / "actions"
    for _ in range(rounds):
        daemon.wait_idle()
        going = len(daemon.ctl_json("to-remove")["files"])
        seen = len(list(journal_dir.glob("*.jsonl"))) if journal_dir.exists() else 0
        stop_after = rng.randint(1, 2 * going)  # journal lines: an intent and a done per file
        proc = subprocess.Popen([sys.executable, "-m", "dedupd.cli.dedupctl", "--socket", str(daemon.socket_path),
                                 "resolve", "--trash"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        while proc.poll() is None:
            journals = sorted(journal_dir.glob("*.jsonl")) if journal_dir.exists() else []
            if len(journals) > seen and journals[-1].read_bytes().count(b"\n") > stop_after:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.001)  # polling the journal for the condition, not waiting for a time
        proc.wait()
        trashed = user.trashed()
        entries = [json.loads(line) for j in sorted(journal_dir.glob("*.jsonl")) for line in j.read_text().splitlines()
                   if line.endswith("}")]
        intents = {e["path"] for e in entries if e["kind"] == "intent"}
        for path in before:
            assert os.path.exists(path) or (path in trashed and path in intents), path
        daemon.stop(signal.SIGKILL)
        daemon.start()
        daemon.wait_idle()
        undone = daemon.ctl("undo", check=False)
        assert undone.returncode in (0, 1), undone.stderr  # 1: killed before its first file moved
        assert user.tree(root) == before
        assert user.trashed() == {}


def _many(user: Any, root: Path, photos: list[Path], distinct: int, copies: int) -> None:
    for k in range(distinct):
        original = root / f"p{k:02d}" / "original.jpg"
        user.jpeg(photos[k], original, width=160)
        os.utime(original, (1_500_000_000, 1_500_000_000))
        for c in range(copies):
            shutil.copy2(original, root / f"p{k:02d}" / f"copy_{c:03d}.jpg")


@pytest.mark.parametrize(("distinct", "copies", "rounds"), [
    (3, 10, 3),  # the short form, in the default run
    pytest.param(10, 50, 6, marks=pytest.mark.slow),  # 500 files trashed, killed at random points
])
def test_sigkill_during_resolve_loses_nothing(daemon_factory: Any, user: Any, tmp_path: Path, photos: list[Path],
                                              distinct: int, copies: int, rounds: int) -> None:
    root = tmp_path / "library"
    _many(user, root, photos, distinct=distinct, copies=copies)
    daemon = daemon_factory([root])
    _kill_and_undo(daemon, root, user, rounds=rounds, seed=distinct * copies)
