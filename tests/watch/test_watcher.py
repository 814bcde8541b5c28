"""Watcher and scan() on real directories with real inotify: events, excludes before watches, overflow, watch
limit, dead threads, offline roots, polling. Waits poll for a condition with a generous deadline; a change made
after the one under test (a "sentinel" file) proves that nothing else was reported in between, because one root's
changes reach the sink in order."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dedupd.mounts import filesystem_type
from dedupd.records import Change, ChangeKind
from dedupd.watch import DEFAULT_EXCLUDE, RootSpec, Watcher, scan

DEADLINE_S = 60.0  # a cap on waits for conditions, never a wait in itself: generous for a loaded machine


class Recorder:
    """A sink that keeps every change and lets the test wait for one."""

    def __init__(self) -> None:
        self.changes: list[Change] = []
        self._cond = threading.Condition()

    def __call__(self, change: Change) -> None:
        with self._cond:
            self.changes.append(change)
            self._cond.notify_all()

    def of(self, kind: ChangeKind) -> list[Change]:
        with self._cond:
            return [c for c in self.changes if c.kind is kind]

    def paths(self, kind: ChangeKind) -> set[str]:
        return {c.path for c in self.of(kind)}

    def wait_for(
        self, predicate: Callable[[list[Change]], bool], tick: Callable[[], object] | None = None
    ) -> list[Change]:
        deadline = time.monotonic() + DEADLINE_S
        while True:
            if tick is not None:
                tick()
            with self._cond:
                if predicate(self.changes):
                    return list(self.changes)
                if time.monotonic() > deadline:
                    raise AssertionError(f"condition not met; changes so far: {self.changes}")
                self._cond.wait(0.05)

    def wait_kind(self, kind: ChangeKind, path: str | None = None, tick: Callable[[], object] | None = None) -> Change:
        def match(changes: list[Change]) -> bool:
            return any(c.kind is kind and (path is None or c.path == path) for c in changes)

        changes = self.wait_for(match, tick)
        return next(c for c in changes if c.kind is kind and (path is None or c.path == path))

    def sentinel(self, root: Path, name: str = "zz-sentinel.jpg") -> None:
        """Creates a file and waits for it: every change made before it has been delivered by then."""
        (root / name).write_bytes(b"s")
        self.wait_kind(ChangeKind.CLOSED, str(root / name))


@pytest.fixture
def watching() -> Iterator[Callable[..., tuple[Watcher, Recorder]]]:
    started: list[Watcher] = []

    def start(
        *specs: RootSpec, sink: Callable[[Change], None] | None = None, **kwargs: object
    ) -> tuple[Watcher, Recorder]:
        recorder = Recorder()
        watcher = Watcher(list(specs), sink or recorder, **kwargs)  # type: ignore[arg-type]
        watcher.start()
        started.append(watcher)
        return watcher, recorder

    yield start
    for watcher in started:
        watcher.stop()


def write(path: Path, data: bytes = b"\xff\xd8 image bytes") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def inotify_fds() -> set[int]:
    fds = set()
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{name}") == "anon_inode:inotify":
                fds.add(int(name))
    return fds


def watched_inodes(fd: int) -> list[int]:
    """The inodes an inotify instance watches, as the kernel reports them."""
    with open(f"/proc/self/fdinfo/{fd}") as info:
        return [int(line.split("ino:")[1].split()[0], 16) for line in info if line.startswith("inotify wd:")]


@contextlib.contextmanager
def sysctl(path: str, value: int) -> Iterator[None]:
    """Sets a /proc/sys value for the block and restores it (skips the test when it cannot be written)."""
    try:
        with open(path) as file:
            saved = file.read().strip()
        with open(path, "w") as file:
            file.write(str(value))
    except OSError as exc:
        pytest.skip(f"cannot write {path} ({exc.strerror}): needs root outside a read-only /proc/sys")
    try:
        yield
    finally:
        with open(path, "w") as file:
            file.write(saved)


# ---------------------------------------------------------------------------------------------------------------
# scan() and the path policy


def make_tree(root: Path) -> None:
    for rel in (
        "a.jpg", ".hidden.jpg", "sub/b.JPG", "sub/c.txt", "sub/deep/d.png", "@eaDir/x.jpg", "sub/@eaDir/IMG.JPG/t.jpg",
        ".git/objects/z", "#recycle/r.jpg", ".Trash-1000/files/t.jpg", ".thumbnails/large/n.png", ".hiddendir/h.jpg",
    ):  # fmt: skip
        write(root / rel)
    (root / "link.jpg").symlink_to(root / "a.jpg")
    (root / "linkdir").symlink_to(root / "sub")
    (root / "loop").symlink_to(root)
    (root / "broken.jpg").symlink_to(root / "missing.jpg")
    os.mkfifo(root / "fifo.jpg")


def scanned(spec: RootSpec) -> set[str]:
    return {os.path.relpath(path, spec.path) for path, _st in scan(spec)}


def test_scan_applies_excludes_hidden_files_include_and_symlink_policy(tmp_path: Path) -> None:
    make_tree(tmp_path)
    root = str(tmp_path)
    everything = {"a.jpg", "sub/b.JPG", "sub/c.txt", "sub/deep/d.png", ".hiddendir/h.jpg"}
    assert scanned(RootSpec(root)) == everything  # hidden files skipped, hidden dirs walked, symlinks ignored
    assert scanned(RootSpec(root, include=("*.jpg",))) == {"a.jpg", "sub/b.JPG", ".hiddendir/h.jpg"}
    assert scanned(RootSpec(root, include=("sub/*",))) == {"sub/b.JPG", "sub/c.txt", "sub/deep/d.png"}
    assert scanned(RootSpec(root, recursive=False)) == {"a.jpg"}
    assert scanned(RootSpec(root, exclude=(*DEFAULT_EXCLUDE, "deep", "sub/c.txt"))) == everything - {
        "sub/deep/d.png",
        "sub/c.txt",
    }
    assert scanned(RootSpec(root, exclude=())) >= {"@eaDir/x.jpg", "#recycle/r.jpg", ".Trash-1000/files/t.jpg"}
    # Followed links: "linkdir" and "sub" are one directory, walked once under whichever name comes first; the
    # link back to the root ends the walk there.
    followed = scanned(RootSpec(root, follow_symlinks=True))
    under_sub = {"sub/b.JPG", "sub/c.txt", "sub/deep/d.png"}
    assert followed in (
        everything | {"link.jpg"},
        everything - under_sub | {"link.jpg"} | {p.replace("sub/", "linkdir/") for p in under_sub},
    )
    subtree = RootSpec(root, exclude=(*DEFAULT_EXCLUDE, "sub/c.txt"))  # a path glob stays anchored at the root
    assert {os.path.relpath(p, root) for p, _st in scan(subtree, under=str(tmp_path / "sub"))} == {
        "sub/b.JPG",
        "sub/deep/d.png",
    }
    assert list(scan(RootSpec(root), under=str(tmp_path / "sub/@eaDir"))) == []
    with pytest.raises(ValueError):
        list(scan(RootSpec(root), under=str(tmp_path.parent)))
    stats = dict(scan(RootSpec(root)))
    assert stats[str(tmp_path / "a.jpg")].st_size == (tmp_path / "a.jpg").stat().st_size


def test_scan_of_a_missing_root_raises_and_unreadable_subdirectories_are_reported(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        list(scan(RootSpec(str(tmp_path / "missing"))))
    write(tmp_path / "ok/a.jpg")
    (tmp_path / "notadir").mkdir()
    errors: list[str] = []
    # A directory that vanishes between its parent's listing and its own: the walk reports it and goes on.
    found = []
    for path, _st in scan(RootSpec(str(tmp_path)), on_error=lambda d, _e: errors.append(d)):
        found.append(path)
        if (tmp_path / "notadir").exists():
            (tmp_path / "notadir").rmdir()
    assert found == [str(tmp_path / "ok/a.jpg")]
    assert errors in ([], [str(tmp_path / "notadir")])  # depends on whether it was listed before the removal


def test_root_spec_normalises_and_accepts_config_like_objects() -> None:
    class FromConfig:
        path = "/srv/photos/"
        recursive = False
        exclude = ["@eaDir"]
        polling = True

    spec = RootSpec.of(FromConfig())
    assert spec == RootSpec("/srv/photos", recursive=False, exclude=("@eaDir",), polling=True)
    assert RootSpec("/x").exclude == DEFAULT_EXCLUDE and RootSpec("/x").polling == "auto"
    for bad in ({"path": "relative"}, {"path": "/x", "polling": "sometimes"}, {"path": "/x", "poll_interval_s": 0}):
        with pytest.raises(ValueError):
            RootSpec(**bad)  # type: ignore[arg-type]


def test_network_filesystems_are_recognised_from_mountinfo(tmp_path: Path) -> None:
    mountinfo = (
        "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
        "40 22 0:50 / /mnt/nas rw,relatime shared:30 - nfs4 nas:/photos rw,vers=4.2\n"
        "41 22 0:51 / /mnt/my\\040share rw - cifs //nas/share rw\n"
    )
    assert filesystem_type("/mnt/nas/2024/a.jpg", mountinfo) == "nfs4"
    assert filesystem_type("/mnt/my share", mountinfo) == "cifs"
    assert filesystem_type("/mnt/nasty", mountinfo) == "ext4"
    assert filesystem_type("/proc/self") == "proc"


# ---------------------------------------------------------------------------------------------------------------
# inotify events


def test_file_lifecycle_created_modified_closed_moved_deleted(tmp_path: Path, watching) -> None:
    watcher, rec = watching(RootSpec(str(tmp_path)))
    assert watcher.roots_status() == [
        {"path": str(tmp_path), "state": "watching", "recursive": True, "watches": 1, "detail": ""}
    ]
    photo = tmp_path / "a.jpg"
    with open(photo, "wb") as file:
        file.write(b"x" * 1000)
        file.flush()
        rec.wait_kind(ChangeKind.MODIFIED, str(photo))
        assert not rec.of(ChangeKind.CLOSED)
    rec.wait_kind(ChangeKind.CLOSED, str(photo))
    photo.rename(tmp_path / "b.jpg")
    moved = rec.wait_kind(ChangeKind.MOVED)
    assert (moved.path, moved.dest, moved.root) == (str(photo), str(tmp_path / "b.jpg"), str(tmp_path))
    (tmp_path / "b.jpg").unlink()
    rec.wait_kind(ChangeKind.DELETED, str(tmp_path / "b.jpg"))
    assert [c.kind for c in rec.changes] == [
        ChangeKind.CREATED, ChangeKind.MODIFIED, ChangeKind.CLOSED, ChangeKind.MOVED, ChangeKind.DELETED,
    ]  # fmt: skip


def test_files_copied_into_a_new_directory_tree_are_all_reported(tmp_path: Path, watching) -> None:
    source = write(tmp_path / "source.jpg", os.urandom(2000))
    root = tmp_path / "root"
    root.mkdir()
    _watcher, rec = watching(RootSpec(str(root)))
    target = root / "a" / "b"
    target.mkdir(parents=True)  # mkdir -p a/b && cp 50 files: some arrive before the watch, as synthetic events
    expected = {str(shutil.copyfile(source, target / f"{i:02}.jpg")) for i in range(50)}
    rec.wait_for(lambda _c: rec.paths(ChangeKind.CREATED) >= expected)
    assert rec.paths(ChangeKind.CREATED) == expected


def test_directory_rename_is_one_dir_moved_and_removal_is_dir_deleted(tmp_path: Path, watching) -> None:
    for i in range(5):
        write(tmp_path / f"album/{i}.jpg")
    write(tmp_path / "album/inner/x.jpg")
    _watcher, rec = watching(RootSpec(str(tmp_path)))
    (tmp_path / "album").rename(tmp_path / "renamed")
    rec.sentinel(tmp_path)
    assert [(c.kind, c.path, c.dest) for c in rec.changes[:1]] == [
        (ChangeKind.DIR_MOVED, str(tmp_path / "album"), str(tmp_path / "renamed"))
    ]
    assert [c.path for c in rec.changes[1:]] == [str(tmp_path / "zz-sentinel.jpg")] * 3  # created, modified, closed
    shutil.rmtree(tmp_path / "renamed")
    rec.wait_kind(ChangeKind.DIR_DELETED, str(tmp_path / "renamed"))
    assert rec.paths(ChangeKind.DIR_DELETED) == {str(tmp_path / "renamed/inner"), str(tmp_path / "renamed")}


def test_moves_across_the_root_boundary(tmp_path: Path, watching) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    write(root / "keep/a.jpg")
    write(root / "leaving/b.jpg")
    write(outside / "in.jpg")
    write(outside / "album/c.jpg")
    watcher, rec = watching(RootSpec(str(root)))
    assert watcher.roots_status()[0]["watches"] == 3
    (root / "keep/a.jpg").rename(outside / "a.jpg")
    rec.wait_kind(ChangeKind.DELETED, str(root / "keep/a.jpg"))
    (outside / "in.jpg").rename(root / "in.jpg")
    assert rec.wait_kind(ChangeKind.CREATED, str(root / "in.jpg")).reason == "moved in"
    (root / "leaving").rename(outside / "left")
    rec.wait_kind(ChangeKind.DIR_DELETED, str(root / "leaving"))
    assert watcher.roots_status()[0]["watches"] == 2  # the tree that left is no longer watched
    write(outside / "left/new.jpg")  # ...so changes out there are not reported under the old path
    (outside / "album").rename(root / "album")
    assert rec.wait_kind(ChangeKind.CREATED, str(root / "album/c.jpg")).reason == "moved in"
    rec.sentinel(root)
    assert not [c for c in rec.changes if "leaving" in c.path and c.kind is not ChangeKind.DIR_DELETED]
    assert not rec.of(ChangeKind.MOVED) and not rec.of(ChangeKind.DIR_MOVED)


def test_temp_file_writers_yield_only_the_final_name(tmp_path: Path, watching) -> None:
    _watcher, rec = watching(RootSpec(str(tmp_path)))
    for temp, final in ((".photo.jpg.Xy12Ab", "photo.jpg"), (".goutputstream-QW3ERT", "edited.jpg")):
        write(tmp_path / temp, os.urandom(5000))
        (tmp_path / temp).rename(tmp_path / final)
        created = rec.wait_kind(ChangeKind.CREATED, str(tmp_path / final))
        assert created.reason == "moved in"
    rec.sentinel(tmp_path)
    assert not [c for c in rec.changes if "/." in c.path or "/." in (c.dest or "")]
    assert rec.paths(ChangeKind.CREATED) == {str(tmp_path / n) for n in ("photo.jpg", "edited.jpg", "zz-sentinel.jpg")}


@pytest.mark.skipif(shutil.which("rsync") is None, reason="rsync is not installed")
def test_real_rsync_into_a_watched_root(tmp_path: Path, watching) -> None:
    source, root = tmp_path / "source", tmp_path / "root"
    names = {f"dir{i % 3}/img{i}.jpg" for i in range(12)}
    for name in names:
        write(source / name, os.urandom(3000))
    root.mkdir()
    _watcher, rec = watching(RootSpec(str(root)))
    subprocess.run(["rsync", "-a", f"{source}/", f"{root}/"], check=True)
    expected = {str(root / name) for name in names}
    rec.wait_for(lambda _c: rec.paths(ChangeKind.CREATED) >= expected)
    rec.sentinel(root)
    assert {c.path for c in rec.changes} == expected | {str(root / "zz-sentinel.jpg")}  # no temp name anywhere


def test_excluded_directories_and_hidden_files_are_never_reported(tmp_path: Path, watching) -> None:
    _watcher, rec = watching(RootSpec(str(tmp_path), include=("*.jpg",)))
    for rel in ("@eaDir/x.jpg", "a/@eaDir/IMG.JPG/t.jpg", ".git/HEAD", "#recycle/r.jpg", ".Trash-0/files/t.jpg",
                ".thumbnails/n.jpg", ".hidden.jpg", "notes.txt", "a/.b.jpg"):  # fmt: skip
        write(tmp_path / rel)
    write(tmp_path / "a/photo.JPG")
    (tmp_path / "@eaDir").rename(tmp_path / "#recycle/eadir")
    rec.sentinel(tmp_path)
    assert {c.path for c in rec.changes} == {str(tmp_path / "a/photo.JPG"), str(tmp_path / "zz-sentinel.jpg")}


def test_excluded_directories_get_no_inotify_watch(tmp_path: Path, watching) -> None:
    """A Synology-style root: one thumbnail directory per photo under @eaDir, 1,000 of them, plus a few albums."""
    for album in ("2023", "2024", "2024/summer"):
        (tmp_path / album).mkdir(parents=True)
    eadir = tmp_path / "2024/@eaDir"
    for i in range(1000):
        (eadir / f"IMG_{i:04}.JPG").mkdir(parents=True)
    excluded_inodes = {os.stat(d).st_ino for d, _dirs, _files in os.walk(eadir)}
    before = inotify_fds()
    watcher, rec = watching(RootSpec(str(tmp_path)))
    (fd,) = inotify_fds() - before  # one inotify instance per root
    inodes = watched_inodes(fd)
    assert len(inodes) == 4  # the root and its three albums: 0 watches for the 1,001 @eaDir directories
    assert not excluded_inodes & set(inodes)
    assert watcher.roots_status()[0]["watches"] == 4
    (tmp_path / "2025/@eaDir/IMG_1.JPG").mkdir(parents=True)  # created later: only 2025 gets a watch
    rec.sentinel(tmp_path)
    assert sorted(watched_inodes(fd)) == sorted([*inodes, os.stat(tmp_path / "2025").st_ino])


def test_symlinked_root_reports_paths_under_the_configured_path(tmp_path: Path, watching) -> None:
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "photos"
    link.symlink_to(real)
    _watcher, rec = watching(RootSpec(str(link)))
    write(real / "a.jpg")
    closed = rec.wait_kind(ChangeKind.CLOSED)
    assert (closed.path, closed.root) == (str(link / "a.jpg"), str(link))


def test_non_recursive_root_reports_only_its_top_level(tmp_path: Path, watching) -> None:
    (tmp_path / "sub").mkdir()
    watcher, rec = watching(RootSpec(str(tmp_path), recursive=False))
    write(tmp_path / "sub/inner.jpg")
    (tmp_path / "sub").rename(tmp_path / "sub2")
    write(tmp_path / "top.jpg")
    rec.wait_kind(ChangeKind.CLOSED, str(tmp_path / "top.jpg"))
    assert {c.path for c in rec.changes} == {str(tmp_path / "top.jpg")}
    assert watcher.roots_status()[0]["watches"] == 1


# ---------------------------------------------------------------------------------------------------------------
# Lost events: back-pressure, overflow, watch limit, dead threads


class Gate:
    """A sink that blocks on its first call until opened (a stalled consumer)."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.blocked = threading.Event()
        self.open = threading.Event()

    def __call__(self, change: Change) -> None:
        self.blocked.set()
        self.open.wait(DEADLINE_S * 3)
        self.recorder(change)


def test_a_slow_sink_loses_nothing_while_the_kernel_queue_holds(tmp_path: Path, watching) -> None:
    rec = Recorder()

    def slow(change: Change) -> None:
        time.sleep(0.001)
        rec(change)

    watching(RootSpec(str(tmp_path)), sink=slow, backlog=8)
    expected = {str(write(tmp_path / f"{i:03}.jpg")) for i in range(300)}
    rec.wait_for(lambda _c: rec.paths(ChangeKind.CLOSED) >= expected)
    assert rec.paths(ChangeKind.CREATED) == expected and not rec.of(ChangeKind.RESCAN)


def test_pending_events_counts_what_the_reader_holds_until_the_sink_has_it(tmp_path: Path, watching) -> None:
    """What `wait-idle` waits for besides the pipeline: events read from inotify but not delivered yet, a
    lone IN_MOVED_FROM (a file moved out of the root, held to pair it) included."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    leaving = write(root / "leaving.jpg")
    outside.mkdir()
    rec = Recorder()
    gate = Gate(rec)
    watcher, _ = watching(RootSpec(str(root)), sink=gate)
    assert watcher.pending_events() == 0
    write(root / "first.jpg")
    assert gate.blocked.wait(DEADLINE_S)  # the emitter is stuck in the sink with the first change
    leaving.rename(outside / "leaving.jpg")
    deadline = time.monotonic() + DEADLINE_S
    while watcher.pending_events() == 0:  # the reader goes on reading into the backlog meanwhile
        assert time.monotonic() < deadline, "the reader never held an event"
        time.sleep(0.02)
    gate.open.set()
    rec.wait_kind(ChangeKind.DELETED, str(leaving))
    rec.sentinel(root)
    assert watcher.pending_events() == 0


def overflow_case(tmp_path: Path, watching, files: int, queue_limit: contextlib.AbstractContextManager) -> None:
    rec = Recorder()
    gate = Gate(rec)
    with queue_limit:  # read by the kernel once, when the root's inotify instance is created
        watching(RootSpec(str(tmp_path)), sink=gate, backlog=16)
    write(tmp_path / "first.jpg")
    assert gate.blocked.wait(DEADLINE_S)  # the consumer is stalled from now on
    expected = {str(write(tmp_path / f"{i:05}.jpg", b"")) for i in range(files)}
    gate.open.set()
    rescan = rec.wait_kind(ChangeKind.RESCAN)
    assert (rescan.path, rescan.root) == (str(tmp_path), str(tmp_path)) and "overflow" in rescan.reason
    assert expected <= {path for path, _st in scan(RootSpec(str(tmp_path)))}  # what the reconcile scan finds
    rec.sentinel(tmp_path)  # and the watches still work afterwards


#: Set to 1 to let tests lower the host-wide fs.inotify.max_queued_events for a moment (root only; .ci/run does):
#: every inotify instance any program creates meanwhile gets the lowered queue.
SYSCTL_ENV = "DEDUPD_TEST_SYSCTL"
QUEUE_KNOB = "/proc/sys/fs/inotify/max_queued_events"


def test_inotify_queue_overflow_is_reported_as_rescan(tmp_path: Path, watching) -> None:
    if os.environ.get(SYSCTL_ENV) == "1":
        overflow_case(tmp_path, watching, 400, sysctl(QUEUE_KNOB, 64))
        return
    with open(QUEUE_KNOB) as file:
        queue = int(file.read())
    if queue > 20_000:
        pytest.skip(f"max_queued_events is {queue} (too many files to overflow it): set {SYSCTL_ENV}=1 to let "
                    "the test lower it for a moment (as root)")
    overflow_case(tmp_path, watching, queue // 2 + 500, contextlib.nullcontext())  # 2 events a file


@pytest.mark.slow
def test_ten_thousand_files_with_a_paused_consumer_overflow_the_default_queue(tmp_path: Path, watching) -> None:
    with open("/proc/sys/fs/inotify/max_queued_events") as file:
        queue = int(file.read())
    if queue > 20_000:
        pytest.skip(f"max_queued_events is {queue}: 10,000 files (2 events each) cannot overflow it")
    overflow_case(tmp_path, watching, 10_000, contextlib.nullcontext())


USERNS_CHILD = r"""
import json, os, sys, time
try:
    os.unshare(os.CLONE_NEWUSER)
    with open("/proc/self/uid_map", "w") as f:
        f.write("0 0 1")
    with open("/proc/sys/user/max_inotify_watches", "w") as f:
        f.write(sys.argv[2])
except OSError as exc:
    print(json.dumps({"skip": f"no private user namespace with its own inotify limit: {exc}"}))
    sys.exit(0)
from dedupd.watch import RootSpec, Watcher
changes = []
watcher = Watcher([RootSpec(sys.argv[1], poll_interval_s=0.2)], changes.append)
watcher.start()
degraded = watcher.roots_status()[0]
deadline = time.monotonic() + 120  # caps only: each loop ends on its condition
while sum(c.kind == "rescan" for c in changes) < 3 and time.monotonic() < deadline:
    watcher.check_health()
    time.sleep(0.05)
rescans = sum(c.kind == "rescan" for c in changes)
with open("/proc/sys/user/max_inotify_watches", "w") as f:
    f.write("100000")  # the operator raises the limit: the next degraded tick watches everything
while watcher.roots_status()[0]["state"] != "watching" and time.monotonic() < deadline + 120:
    watcher.check_health()
    time.sleep(0.05)
print(json.dumps({"degraded": degraded, "rescans": rescans, "reasons": sorted({c.reason for c in changes}),
                  "recovered": watcher.roots_status()[0]}))
watcher.stop()
"""


def test_watch_limit_exhaustion_degrades_the_root_and_rescans_it(tmp_path: Path) -> None:
    """Runs in a private user namespace whose own inotify watch limit is lowered: the machine's is untouched."""
    for i in range(30):
        (tmp_path / f"album{i:02}").mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", USERNS_CHILD, str(tmp_path), "10"], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.splitlines()[-1])
    if "skip" in result:
        pytest.skip(result["skip"])
    degraded = result["degraded"]
    assert degraded["state"] == "degraded" and degraded["watches"] == 10
    assert "21 of 31 directories have no watch" in degraded["detail"]
    assert "raise user.max_inotify_watches (now 10) to at least 31" in degraded["detail"]
    assert result["rescans"] >= 3  # at start, then every poll_interval_s
    assert result["recovered"]["state"] == "watching" and result["recovered"]["watches"] == 31


def test_a_dead_emitter_thread_is_restarted_and_the_root_rescanned(tmp_path: Path, watching) -> None:
    rec = Recorder()
    raised = []

    def fragile(change: Change) -> None:
        if change.path.endswith("boom.jpg") and not raised:
            raised.append(change)
            raise RuntimeError("a bug in the consumer")
        rec(change)

    watcher, _ = watching(RootSpec(str(tmp_path)), sink=fragile)
    write(tmp_path / "boom.jpg")
    rescan = rec.wait_kind(ChangeKind.RESCAN, tick=watcher.check_health)
    assert "died" in rescan.reason and rescan.path == str(tmp_path)
    assert watcher.check_health() and watcher.roots_status()[0]["state"] == "watching"
    rec.sentinel(tmp_path)


# ---------------------------------------------------------------------------------------------------------------
# Offline roots


def test_root_renamed_away_is_offline_without_deletions_and_comes_back(tmp_path: Path, watching) -> None:
    root, away = tmp_path / "photos", tmp_path / "photos.away"
    write(root / "a.jpg")
    write(root / "sub/b.jpg")
    watcher, rec = watching(RootSpec(str(root)))
    root.rename(away)
    offline = rec.wait_kind(ChangeKind.ROOT_OFFLINE)  # at once, from inotify: no health check needed
    assert offline.path == str(root) and "moved away" in offline.reason
    (away / "a.jpg").unlink()
    write(away / "sub/new.jpg")
    for _ in range(3):
        assert watcher.check_health()
    assert watcher.roots_status()[0]["state"] == "offline" and watcher.roots_status()[0]["watches"] == 0
    away.rename(root)
    rec.wait_kind(ChangeKind.ROOT_ONLINE, tick=watcher.check_health)
    assert watcher.roots_status()[0]["state"] == "watching"
    rec.sentinel(root)
    assert [c.kind for c in rec.changes if c.path != str(root / "zz-sentinel.jpg")] == [
        ChangeKind.ROOT_OFFLINE, ChangeKind.ROOT_ONLINE,
    ]  # fmt: skip


def test_root_missing_at_start_comes_online_when_created(tmp_path: Path, watching) -> None:
    root = tmp_path / "later"
    watcher, rec = watching(RootSpec(str(root)))
    assert rec.wait_kind(ChangeKind.ROOT_OFFLINE).path == str(root)
    assert watcher.roots_status()[0]["state"] == "offline"
    root.mkdir()
    rec.wait_kind(ChangeKind.ROOT_ONLINE, tick=watcher.check_health)
    rec.sentinel(root)


def test_unmounted_root_stays_offline_until_remounted(tmp_path: Path, watching) -> None:
    disk, mount_point = tmp_path / "disk", tmp_path / "mnt"
    write(disk / "a.jpg")
    mount_point.mkdir()
    if subprocess.run(["mount", "--bind", str(disk), str(mount_point)], capture_output=True).returncode != 0:
        pytest.skip("cannot bind-mount here (needs root and mount privileges)")
    try:
        watcher, rec = watching(RootSpec(str(mount_point)))
        subprocess.run(["umount", str(mount_point)], check=True)
        offline = rec.wait_kind(ChangeKind.ROOT_OFFLINE, tick=watcher.check_health)
        assert "another directory" in offline.reason
        for _ in range(3):  # an empty mount point is not the root coming back
            assert watcher.check_health()
        assert watcher.roots_status()[0]["state"] == "offline"
        subprocess.run(["mount", "--bind", str(disk), str(mount_point)], check=True)
        rec.wait_kind(ChangeKind.ROOT_ONLINE, tick=watcher.check_health)
        rec.sentinel(mount_point)
        assert not rec.of(ChangeKind.DELETED) and not rec.of(ChangeKind.DIR_DELETED)
    finally:
        subprocess.run(["umount", str(mount_point)], capture_output=True)


# ---------------------------------------------------------------------------------------------------------------
# Polling


def test_polled_root_reports_changes_and_never_walks_excluded_trees(tmp_path: Path, watching) -> None:
    write(tmp_path / "album/old.jpg")
    watcher, rec = watching(RootSpec(str(tmp_path), polling=True, poll_interval_s=0.05))
    status = watcher.roots_status()[0]
    assert (status["state"], status["watches"], status["detail"]) == ("polling", 0, "polled every 0.05 s")
    photo = write(tmp_path / "a.jpg")
    write(tmp_path / "@eaDir/a.jpg/thumb.jpg")
    write(tmp_path / ".a.jpg.tmp")
    rec.wait_kind(ChangeKind.CREATED, str(photo))
    with open(photo, "ab") as file:
        file.write(b"more")
    rec.wait_kind(ChangeKind.MODIFIED, str(photo))
    photo.rename(tmp_path / "b.jpg")
    assert rec.wait_kind(ChangeKind.MOVED, str(photo)).dest == str(tmp_path / "b.jpg")
    (tmp_path / "album").rename(tmp_path / "album2")
    assert rec.wait_kind(ChangeKind.DIR_MOVED).dest == str(tmp_path / "album2")
    (tmp_path / "b.jpg").unlink()
    rec.wait_kind(ChangeKind.DELETED, str(tmp_path / "b.jpg"))
    assert [c.kind for c in rec.changes] == [
        ChangeKind.CREATED,
        ChangeKind.MODIFIED,
        ChangeKind.MOVED,
        ChangeKind.DIR_MOVED,
        ChangeKind.DELETED,
    ]  # fmt: skip  (no MOVED for album/old.jpg, nothing from @eaDir or the hidden file)


def test_polled_root_follows_symlinked_directories_once_and_ends_link_loops(tmp_path: Path, watching) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    write(root / "a.jpg")
    write(outside / "b.jpg")
    (root / "linked").symlink_to(outside)
    (root / "loop").symlink_to(root)  # a walk that does not remember where it has been never ends
    watcher, rec = watching(RootSpec(str(root), polling=True, poll_interval_s=0.05, follow_symlinks=True))
    photo = write(outside / "c.jpg")
    rec.wait_kind(ChangeKind.CREATED, str(root / "linked/c.jpg"))
    assert watcher.roots_status()[0]["state"] == "polling"
    assert rec.paths(ChangeKind.CREATED) == {str(root / "linked/c.jpg")}  # not again as loop/linked/c.jpg
    photo.unlink()
    rec.wait_kind(ChangeKind.DELETED, str(root / "linked/c.jpg"))


def test_polled_root_losing_most_files_at_once_is_an_outage(tmp_path: Path, watching) -> None:
    root = tmp_path / "share"
    for i in range(12):
        write(root / f"photos/{i}.jpg")
    write(root / "keep.jpg")
    watcher, rec = watching(RootSpec(str(root), polling=True, poll_interval_s=0.05))
    (root / "photos").rename(tmp_path / "gone")  # 12 of 13 files vanish between two polls
    offline = rec.wait_kind(ChangeKind.ROOT_OFFLINE, tick=watcher.check_health)
    assert "12 of 13 files vanished" in offline.reason
    (tmp_path / "gone").rename(root / "photos")
    rec.wait_kind(ChangeKind.ROOT_ONLINE, tick=watcher.check_health)
    assert watcher.roots_status()[0]["state"] == "polling"
    assert not rec.of(ChangeKind.DELETED) and not rec.of(ChangeKind.DIR_DELETED)


def test_the_mass_deletion_guard_is_configurable(tmp_path: Path, watching) -> None:
    for i in range(20):
        write(tmp_path / f"photos/{i}.jpg")
    write(tmp_path / "other/keep.jpg", b"")
    watcher, rec = watching(RootSpec(str(tmp_path), polling=True, poll_interval_s=0.05), mass_deletion_guard=0.99)
    shutil.rmtree(tmp_path / "photos")  # 20 of 21 files: below the 99 % guard, so real deletions
    rec.wait_for(lambda _c: len(rec.of(ChangeKind.DELETED)) == 20)
    assert rec.paths(ChangeKind.DIR_DELETED) == {str(tmp_path / "photos")} and not rec.of(ChangeKind.ROOT_OFFLINE)


def test_auto_polling_picks_inotify_on_a_local_filesystem(tmp_path: Path, watching) -> None:
    watcher, _rec = watching(RootSpec(str(tmp_path), polling="auto"))
    assert watcher.roots_status()[0]["state"] == "watching"


# ---------------------------------------------------------------------------------------------------------------
# Roots at runtime


def test_roots_can_be_added_and_removed_while_running(tmp_path: Path, watching) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    watcher, rec = watching(RootSpec(str(first)))
    watcher.add_root(RootSpec(str(second), recursive=False))
    assert [(s["path"], s["state"], s["recursive"]) for s in watcher.roots_status()] == [
        (str(first), "watching", True),
        (str(second), "watching", False),
    ]
    write(second / "b.jpg")
    rec.wait_kind(ChangeKind.CLOSED, str(second / "b.jpg"))
    watcher.remove_root(str(second) + "/")
    write(second / "c.jpg")
    rec.sentinel(first)
    assert not [c for c in rec.changes if c.path == str(second / "c.jpg")]
    assert [s["path"] for s in watcher.roots_status()] == [str(first)]
    with pytest.raises(KeyError):
        watcher.remove_root(str(second))


def test_stop_leaves_no_thread_or_inotify_instance_even_after_restarts(tmp_path: Path) -> None:
    before_fds, before_threads = inotify_fds(), set(threading.enumerate())
    failures = []

    def fragile(change: Change) -> None:
        if change.path.endswith("boom.jpg") and len(failures) < 2:
            failures.append(change)
            raise RuntimeError("a bug in the consumer")

    watcher = Watcher([RootSpec(str(tmp_path)), RootSpec(str(tmp_path / "polled"), polling=True)], fragile)
    watcher.start()
    for attempt in range(2):
        write(tmp_path / "boom.jpg")
        deadline = time.monotonic() + DEADLINE_S
        while len(failures) <= attempt and time.monotonic() < deadline:
            time.sleep(0.02)
        watcher.check_health()  # restarts the dead emitter: a new reader and inotify instance
        (tmp_path / "boom.jpg").unlink()
    assert len(failures) == 2 and watcher.check_health()
    watcher.stop()
    assert inotify_fds() == before_fds
    assert not [t for t in set(threading.enumerate()) - before_threads if t.is_alive()]
