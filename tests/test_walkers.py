"""`dedupd scan` and the daemon's `needles` walk a folder as the watcher walks a root: one walker
(`dedupd.watch.scan`), so the default excludes (`@eaDir` thumbnails, desktop thumbnail caches, recycle bins)
and hidden files are left out everywhere."""

import os
from pathlib import Path

from dedupd.scan import discover
from dedupd.service.needles import _images
from dedupd.watch import RootSpec
from dedupd.watch import scan as watch_scan


def _tree(root: Path) -> None:
    for name in ("a.jpg", ".hidden.jpg", "@eaDir/a.jpg/SYNOPHOTO_THUMB_XL.jpg", ".thumbnails/large/x.png",
                 "#recycle/old.jpg", "sub/b.jpg", "sub/@eaDir/b.jpg/SYNOPHOTO_THUMB_M.jpg", ".Trash-1000/files/c.jpg"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")


def test_scan_and_needles_leave_out_what_the_daemon_leaves_out(tmp_path: Path) -> None:
    _tree(tmp_path)
    daemon = sorted(path for path, _ in watch_scan(RootSpec(str(tmp_path))))
    assert daemon == [str(tmp_path / "a.jpg"), str(tmp_path / "sub" / "b.jpg")]
    assert [str(p) for p in discover(tmp_path, recursive=True)] == daemon
    assert sorted(_images(str(tmp_path))) == daemon
    assert [str(p) for p in discover(tmp_path, recursive=False)] == [str(tmp_path / "a.jpg")]


def test_needles_follows_symlinks_and_an_unlistable_folder_has_no_files(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "c.jpg").write_bytes(b"x")
    folder = tmp_path / "folder"
    folder.mkdir()
    os.symlink(outside / "c.jpg", folder / "link.jpg")
    assert list(_images(str(folder))) == [str(folder / "link.jpg")]
    assert discover(folder, recursive=True) == []  # the scan, like the daemon by default, ignores symlinks
    assert list(_images(str(tmp_path / "missing"))) == [] and discover(tmp_path / "missing", recursive=True) == []
