"""Never wrong about the user's files: a real daemon against symlinks, its own files, touched files, floods,
hostile files and a full disk (issue 10). Photos are scikit-image's, re-encoded here."""

import io
import os
from pathlib import Path

import pytest
from PIL import Image

pytestmark = pytest.mark.e2e


def _encoded(source: Path, fmt: str = "JPEG", size: int = 256) -> bytes:
    with Image.open(source) as image:
        rgb = image.convert("RGB")
    rgb.thumbnail((size, size))
    buffer = io.BytesIO()
    rgb.save(buffer, fmt, quality=90)
    return buffer.getvalue()


def _follow_symlinks(daemon) -> None:
    """Turn on follow_symlinks for the (last, here the only) root of a daemon's config."""
    daemon.config.write_text(daemon.config.read_text() + "follow_symlinks = true\n")


@pytest.mark.parametrize("follow", [False, True], ids=["ignored", "followed"])
def test_a_symlink_made_while_running_is_never_a_duplicate_of_its_target(
    tmp_path: Path, daemon_factory, photos, follow: bool
) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (root / "photo.webp").write_bytes(_encoded(photos[0], "WEBP"))
    (outside / "other.jpg").write_bytes(_encoded(photos[1]))
    daemon = daemon_factory([root], start=False)
    if follow:
        _follow_symlinks(daemon)
    daemon.start()
    daemon.wait_idle()
    os.symlink(root / "photo.webp", root / "a_link.webp")  # live inotify events, not the startup scan
    os.symlink(outside / "other.jpg", root / "b_link.jpg")
    os.symlink(root / "photo.webp", outside / "moved_link.webp")
    os.rename(outside / "moved_link.webp", root / "c_link.webp")  # a link moved in
    (root / "sentinel.jpg").write_bytes(_encoded(photos[2]))
    daemon.wait_idle()
    indexed = set(daemon.ctl_json("export")["encodings"])
    links = {str(root / n) for n in ("a_link.webp", "b_link.jpg", "c_link.webp")}
    if follow:
        assert links <= indexed
    else:
        assert indexed == {str(root / "photo.webp"), str(root / "sentinel.jpg")}
    assert daemon.ctl_json("to-remove")["files"] == []
    assert daemon.ctl_json("duplicates")["groups"] == []
    assert daemon.reports() == []
    assert daemon.stop() == 0
    # A fresh start (the reconcile scan) applies the same policy and finds the same.
    daemon.start()
    daemon.wait_idle()
    assert set(daemon.ctl_json("export")["encodings"]) == indexed
    assert daemon.ctl_json("to-remove")["files"] == []
    assert daemon.stop() == 0


def test_the_daemons_own_files_inside_a_root_are_never_indexed(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, daemon_factory, photos
) -> None:
    """The root holds the daemon's log (its stderr), its reports and, through a followed symlink, its state dir."""
    root = tmp_path  # the fixture's home: daemon.log, reports/ and the config live here
    state = tmp_path_factory.mktemp("elsewhere") / "state"
    state.mkdir()
    (root / "state-link").symlink_to(state)
    (root / "photo.jpg").write_bytes(_encoded(photos[0]))
    daemon = daemon_factory([root], start=False)
    daemon.config.write_text(daemon.config.read_text().replace(f'state_dir = "{tmp_path / "state"}"',
                                                               f'state_dir = "{state}"'))
    _follow_symlinks(daemon)
    daemon.start()
    daemon.wait_idle(timeout=60)
    (root / "copy.jpg").write_bytes((root / "photo.jpg").read_bytes())  # a report lands in the root
    daemon.wait_idle(timeout=60)
    assert len(daemon.reports()) == 1
    status = daemon.status()
    assert set(daemon.ctl_json("export")["encodings"]) == {str(root / "photo.jpg"), str(root / "copy.jpg")}
    # Of the files in the root only the config is a non-image the daemon looked at; nothing of its own.
    assert status["counts"]["skipped"] == {"unsupported_format": 1}
    decodes = status["counts"]["decodes"]
    daemon.ctl("rescan")
    daemon.wait_idle(timeout=60)
    assert daemon.status()["counts"]["decodes"] == decodes
    assert daemon.stop() == 0


def test_a_flood_of_byte_copies_is_one_class_not_every_pair(tmp_path: Path, daemon_factory, photos) -> None:
    """N copies of one PNG: N - 1 links and reported matches (pair by pair was N(N-1)/2), one group; the class
    survives losing any member, its first one included, and a re-encoded copy arriving later joins it once."""
    root = tmp_path / "photos"
    root.mkdir()
    png = _encoded(photos[3], "PNG", size=64)
    daemon = daemon_factory([root])
    count = 120
    for i in range(count):
        (root / f"copy_{i:03d}.png").write_bytes(png)
    daemon.wait_idle()
    reports = daemon.reports()
    assert sum(len(r["matches"]) for r in reports) == count - 1
    assert {m["method"] for r in reports for m in r["matches"]} == {"exact"}
    (group,) = daemon.ctl_json("duplicates")["groups"]
    assert len(group) == count
    assert len(daemon.ctl_json("to-remove")["files"]) == count - 1
    first = min(reports, key=lambda r: r["detected_at"])["matches"][0]["path"]  # the class's first member
    os.unlink(first)
    os.unlink(root / "copy_077.png")
    daemon.wait_idle()
    (group,) = daemon.ctl_json("duplicates")["groups"]
    assert len(group) == count - 2 - (first == str(root / "copy_077.png"))
    assert len(daemon.reports()) == len(reports), "losing a copy reports nothing"
    with Image.open(io.BytesIO(png)) as image:
        image.convert("RGB").save(root / "recompressed.jpg", "JPEG", quality=85)
    daemon.wait_idle()
    (group,) = daemon.ctl_json("duplicates")["groups"]
    assert str(root / "recompressed.jpg") in {member["path"] for member in group}
    (late,) = daemon.reports()[len(reports):]
    assert late["file"] == str(root / "recompressed.jpg") and len(late["matches"]) == 1
    assert daemon.stop() == 0


def test_a_file_over_max_file_size_is_skipped_unread(tmp_path: Path, daemon_factory, photos) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    daemon = daemon_factory([root])
    with open(root / "sparse.jpg", "wb") as handle:  # 2.5 GB that take no disk: read whole, 2.5 GB of RSS
        handle.write(_encoded(photos[0]))
        handle.truncate(2_500_000_000)
    (root / "small.jpg").write_bytes(_encoded(photos[1]))
    daemon.wait_idle()
    status = daemon.status()
    assert status["counts"]["skipped"] == {"too_large": 1}
    assert status["counts"]["indexed"] == 1
    assert "sparse.jpg: too_large" in daemon.log_text()
    assert daemon.stop() == 0


def test_query_and_needles_decode_hostile_files_in_the_pool_and_needles_is_a_job(
    tmp_path: Path, daemon_factory, photos
) -> None:
    """A FIFO, a /dev/zero symlink and a big non-image are refused or skipped without hurting the daemon (they
    used to block a handler for good, or run it out of memory); needles runs as a job the client can poll."""
    from concurrent.futures import ThreadPoolExecutor

    from dedupd.cli.client import call

    library = tmp_path / "photos"
    library.mkdir()
    (library / "a.jpg").write_bytes(_encoded(photos[0]))
    backup = tmp_path / "backup"
    (backup / "2019").mkdir(parents=True)
    (backup / "2019" / "a_copy.jpg").write_bytes(_encoded(photos[0]))
    (backup / "2019" / "new.jpg").write_bytes(_encoded(photos[1]))
    os.mkfifo(backup / "fifo.jpg")
    (backup / "zero.jpg").symlink_to("/dev/zero")
    with open(backup / "big.bin", "wb") as handle:  # under max_file_size: read, and refused, by a worker
        handle.truncate(300_000_000)
    daemon = daemon_factory([library])
    daemon.wait_idle()
    with ThreadPoolExecutor(8) as threads:  # 40 FIFO queries used to leave every verb answering "busy"
        runs = list(threads.map(lambda _: daemon.ctl("query", str(backup / "fifo.jpg"), check=False), range(40)))
    assert {run.returncode for run in runs} == {1} and "not a regular file" in runs[0].stderr
    for hostile in ("zero.jpg", "big.bin", "big.bin"):
        run = daemon.ctl("query", str(backup / hostile), check=False)
        assert run.returncode == 1 and "internal" not in run.stderr, run.stderr
    assert daemon.status()["state"] == "running"
    found = daemon.ctl_json("query", str(backup / "2019" / "a_copy.jpg"))["matches"]
    assert [m["path"] for m in found] == [str(library / "a.jpg")]

    socket_path = str(daemon.socket_path)
    started = call(socket_path, "needles", {"dir": str(backup), "wait": 0})
    if not started["done"]:  # the job's progress first, then its result to whoever polls
        assert started["job"] and started["dir"] == str(backup)
        result = started
        while not result["done"]:
            result = call(socket_path, "needles", {"job": started["job"]})
    else:
        result = started
    assert result["found"] == 1 and result["total"] == 2 and result["skipped"] == 1  # big.bin; not FIFO, device
    assert result["files"][str(backup / "2019" / "a_copy.jpg")][0]["path"] == str(library / "a.jpg")
    assert {f["path"]: f["all"] for f in result["folders"]} == {str(backup): False, str(backup / "2019"): False}
    text = daemon.ctl("needles", str(backup)).stdout  # dedupctl polls by itself
    assert text.startswith("1 of 2 images already in the library")
    assert daemon.stop() == 0


def test_a_metadata_only_change_is_not_decoded_nor_reported_again(tmp_path: Path, daemon_factory, photos) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    for i in range(6):
        (root / f"p{i}.jpg").write_bytes(_encoded(photos[i]))
        (root / f"p{i}_copy.jpg").write_bytes(_encoded(photos[i]))
    daemon = daemon_factory([root])
    daemon.wait_idle()
    before = daemon.status()["counts"]
    reports = daemon.reports()
    groups = daemon.ctl_json("duplicates")["groups"]
    assert len(reports) == 6 and before["decodes"] == 6 and before["reused"] == 6  # each pair: one read, not decoded
    for path in sorted(root.iterdir()):  # touch: a new mtime, the same bytes
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 5_000_000_000))
    daemon.wait_idle()
    after = daemon.status()["counts"]
    assert after["decodes"] == before["decodes"] and after["same_content"] == 12
    assert daemon.reports() == reports
    assert daemon.ctl_json("duplicates")["groups"] == groups
    assert daemon.stop() == 0
    daemon.start()  # the new stat identity was stored: nothing to read again
    daemon.wait_idle()
    assert daemon.status()["counts"]["decodes"] == 0 and daemon.status()["counts"]["same_content"] == 0
    assert daemon.stop() == 0


def _recompressed(data: bytes, quality: int) -> bytes:
    with Image.open(io.BytesIO(data)) as image:
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def test_an_ignored_pair_is_never_grouped_again_until_unignored(tmp_path: Path, daemon_factory, photos) -> None:
    """A and B ignored while C matches both: no group holds A and B (a union of links did), needles does not
    list the pair, `ignore --list` shows it and `unignore` undoes it."""
    root = tmp_path / "photos"
    (root / "import").mkdir(parents=True)
    original = _encoded(photos[4], size=384)
    a, b, c = root / "a.jpg", root / "import" / "b.jpg", root / "c.jpg"
    a.write_bytes(original)
    b.write_bytes(_recompressed(original, 60))
    c.write_bytes(_recompressed(original, 75))
    daemon = daemon_factory([root])
    daemon.wait_idle()
    (group,) = daemon.ctl_json("duplicates")["groups"]
    assert {m["path"] for m in group} == {str(a), str(b), str(c)}
    daemon.ctl("ignore", str(a), str(b))
    groups = [{m["path"] for m in g} for g in daemon.ctl_json("duplicates")["groups"]]
    assert groups and not [g for g in groups if {str(a), str(b)} <= g]
    assert len(set(daemon.ctl_json("to-remove")["files"]) & {str(a), str(b)}) <= 1  # never one for the other
    found = daemon.ctl_json("needles", str(root / "import"))["files"][str(b)]
    assert str(a) not in {m["path"] for m in found}
    assert daemon.ctl_json("ignore", "--list")["pairs"] == [sorted([str(a), str(b)])]
    assert daemon.ctl("ignore", "--list").stdout.strip() == "  ".join(sorted([str(a), str(b)]))
    assert daemon.ctl_json("unignore", str(b), str(a))["unignored"] == 1
    assert daemon.ctl_json("ignore", "--list")["pairs"] == []
    (group,) = daemon.ctl_json("duplicates")["groups"]
    assert {m["path"] for m in group} == {str(a), str(b), str(c)}
    assert daemon.stop() == 0
    daemon.start()  # and so it stays after a restart
    daemon.wait_idle()
    (group,) = daemon.ctl_json("duplicates")["groups"]
    assert {m["path"] for m in group} == {str(a), str(b), str(c)}
    assert daemon.stop() == 0


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 2 MiB tmpfs (the tests run as root); skipped, saying why, where mounting is impossible."""
    import subprocess

    mount = tmp_path / "small"
    mount.mkdir()
    run = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                         capture_output=True, text=True)
    if run.returncode != 0:
        pytest.skip(f"cannot mount a 2 MiB tmpfs ({run.stderr.strip() or run.returncode}): needs root with "
                    "mount rights")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(mount: Path) -> Path:
    filler = mount / "filler"
    with open(filler, "wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError:
            pass
    return filler


def _wait_for(condition, what: str, timeout: float = 120) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.2)


def test_a_full_disk_is_visible_retried_and_never_wedges_a_stop(
    tmp_path: Path, small_disk: Path, daemon_factory, photos
) -> None:
    import signal

    root = tmp_path / "photos"
    root.mkdir()
    (root / "p0.jpg").write_bytes(_encoded(photos[0]))
    daemon = daemon_factory([root], start=False)
    config = daemon.config.read_text()
    for key in ("state", "reports"):
        name = "state_dir" if key == "state" else "report_dir"
        config = config.replace(f'{name} = "{tmp_path / key}"', f'{name} = "{small_disk / key}"')
    daemon.config.write_text(config)
    daemon.report_dir = small_disk / "reports"
    daemon.start()
    daemon.wait_idle()
    filler = _fill(small_disk)
    (root / "p0_copy.jpg").write_bytes((root / "p0.jpg").read_bytes())
    for i in range(1, 5):
        (root / f"p{i}.jpg").write_bytes(_encoded(photos[i]))
    _wait_for(lambda: "commit" in daemon.status()["problems"], "status names the failing commit stage")
    assert "FAILING commit:" in daemon.ctl("status").stdout
    assert "commit of" in daemon.log_text() and "retrying" in daemon.log_text()
    filler.unlink()  # space again: the daemon retries by itself
    daemon.wait_idle()
    status = daemon.status()
    assert status["problems"] == {} and status["counts"]["indexed"] == 6
    assert [r["file"] for r in daemon.reports()] == [str(root / "p0_copy.jpg")]
    filler = _fill(small_disk)
    (root / "p5.jpg").write_bytes(_encoded(photos[5]))
    _wait_for(lambda: "commit" in daemon.status()["problems"], "the commit stage fails again")
    assert daemon.process is not None
    daemon.process.send_signal(signal.SIGTERM)
    assert daemon.process.wait(timeout=60) == 0  # systemd's TimeoutStopSec: it used to ignore SIGTERM for minutes
    assert "were not committed" in daemon.log_text()
    daemon.stop()
    filler.unlink()
    daemon.start()  # the next start's scan finds the file that was not committed
    daemon.wait_idle()
    assert daemon.status()["counts"]["indexed"] == 7
    assert daemon.stop() == 0
