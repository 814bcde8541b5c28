"""The state dir and the socket end to end, with real daemon processes: one daemon per state dir, private
files, a damaged store, a squatted socket directory, half-open connections."""

import contextlib
import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import lmdb
import pytest

from dedupd.store import Store
from tests.e2e.conftest import RunningDaemon, write_config

pytestmark = pytest.mark.e2e


def _second_config(home: Path, first: RunningDaemon) -> Path:
    """Another daemon's config on the first one's state dir (its own socket and reports)."""
    home.mkdir()
    config, _, _ = write_config(home, [])
    state = first.config.read_text().splitlines()[0]
    lines = [state if line.startswith("state_dir") else line for line in config.read_text().splitlines()]
    config.write_text("\n".join(lines) + "\n")
    return config


def _run_second(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dedupd", "run", "--config", str(config)],
                          capture_output=True, text=True, timeout=300)


def test_a_second_daemon_on_the_same_state_dir_exits_naming_the_first(tmp_path: Path, daemon_factory,
                                                                      photos) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "a.png").write_bytes(photos[0].read_bytes())
    first = daemon_factory([root])
    first.wait_idle()
    assert first.process is not None
    config = _second_config(tmp_path / "second", first)
    state = tmp_path / "state"
    for attempt in ("lock.mdb in place", "lock.mdb deleted"):
        if attempt == "lock.mdb deleted":
            (state / "store" / "lock.mdb").unlink()
        second = _run_second(config)
        assert second.returncode == 1, (attempt, second.stderr)
        assert f"the state dir {state} is in use by dedupd pid {first.process.pid}" in second.stderr, second.stderr
        assert "Traceback" not in second.stderr
    assert first.status()["counts"]["indexed"] == 1  # the first one is unharmed
    assert first.stop() == 0
    home = tmp_path / "second"
    restarted = RunningDaemon(home, config, home / "run" / "control.sock", home / "reports")
    restarted.start()  # once the first is gone, the second may start
    try:
        restarted.wait_idle()
        assert restarted.status()["counts"]["indexed"] == 1
    finally:
        assert restarted.stop() == 0


def test_the_store_and_state_dir_are_private(tmp_path: Path, daemon_factory, photos) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "a.png").write_bytes(photos[0].read_bytes())
    old_umask = os.umask(0o022)  # a usual umask: the modes must not depend on it
    try:
        daemon = daemon_factory([root])
    finally:
        os.umask(old_umask)
    daemon.wait_idle()
    state = tmp_path / "state"
    modes = {path.name: stat.S_IMODE(path.stat().st_mode)
             for path in (state, state / "store", state / "store" / "data.mdb", state / "store" / "lock.mdb")}
    assert modes == {"state": 0o700, "store": 0o700, "data.mdb": 0o600, "lock.mdb": 0o600}
    assert daemon.stop() == 0


def _dedupd(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dedupd", *args, "--config", str(config)],
                          capture_output=True, text=True, timeout=300)


def _refused_with_one_line(config: Path, data: Path) -> None:
    size = data.stat().st_size
    run = _dedupd(config, "run")
    assert run.returncode == 1, (run.returncode, run.stderr)  # not 135 (SIGBUS), not a daemon on an empty store
    lines = [line for line in run.stderr.splitlines() if line.startswith("dedupd: ")]
    assert len(lines) == 1 and "is damaged" in lines[0] and "dedupd check-store --repair" in lines[0], run.stderr
    assert "Traceback" not in run.stderr and data.stat().st_size == size
    check = _dedupd(config, "check-store")
    assert check.returncode == 1 and "is damaged" in check.stdout, (check.stdout, check.stderr)


def test_a_damaged_store_is_refused_in_one_line_and_check_store_repair_rebuilds_it(tmp_path: Path, daemon_factory,
                                                                                   photos) -> None:
    root = tmp_path / "root"
    root.mkdir()
    for name, photo in (("a.png", photos[0]), ("b.png", photos[0]), ("c.png", photos[1]), ("d.png", photos[1])):
        (root / name).write_bytes(photo.read_bytes())
    daemon = daemon_factory([root])
    daemon.wait_idle()
    daemon.ctl("ignore", str(root / "a.png"), str(root / "b.png"))
    assert daemon.stop() == 0
    state, data = tmp_path / "state", tmp_path / "state" / "store" / "data.mdb"
    assert _dedupd(daemon.config, "check-store").stdout.startswith(f"the store in {state} is sound")

    # One record overwritten with garbage (what a flipped byte in a value does): the rest, the ignored pair
    # included, is kept; the lost file is re-encoded by the start-up scan.
    with Store.open(state) as store:
        found = store.lookup(str(root / "c.png"))
    assert found is not None
    env = lmdb.open(str(state / "store"), max_dbs=64)  # behind the store's back, as damage is
    with env.begin(write=True) as txn:
        txn.put(found[0].to_bytes(8, "big"), b"\xc1\xc1", db=env.open_db(b"files", txn=txn))
    env.close()
    _refused_with_one_line(daemon.config, data)
    repaired = _dedupd(daemon.config, "check-store", "--repair", "--json")
    assert repaired.returncode == 0, repaired.stderr
    assert json.loads(repaired.stdout)["repair"] | {"damaged_copy": None, "notes": []} == {
        "kept": 3, "dropped": 1, "ignored_pairs": 1, "damaged_copy": None, "notes": []}
    assert len(list(state.glob("store.damaged-*"))) == 1
    daemon.start()
    daemon.wait_idle()
    assert daemon.status()["counts"]["indexed"] == 4
    groups = [sorted(member["path"] for member in group) for group in daemon.ctl_json("duplicates")["groups"]]
    assert groups == [[str(root / "c.png"), str(root / "d.png")]]  # a and b stay ignored
    assert daemon.stop() == 0

    # Truncated to 8 KiB (was: SIGBUS at start): nothing is readable, every file is encoded again.
    os.truncate(data, 8192)
    _refused_with_one_line(daemon.config, data)
    assert _dedupd(daemon.config, "check-store", "--repair").returncode == 0
    daemon.start()
    daemon.wait_idle()
    assert daemon.status()["counts"]["indexed"] == 4
    assert daemon.stop() == 0


def test_the_daemon_will_not_serve_in_a_socket_directory_another_user_made(tmp_path: Path, daemon_factory) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give a directory to another uid")
    daemon = daemon_factory([], start=False)
    squat = daemon.socket_path.parent
    squat.mkdir()
    os.chown(squat, 65534, 65534)  # as if uid 65534 had made /tmp/dedupd-0 first
    squat.chmod(0o777)
    run = _dedupd(daemon.config, "run")
    assert run.returncode == 1, run.stderr
    lines = [line for line in run.stderr.splitlines() if line.startswith("dedupd: ")]
    assert lines == [f"dedupd: not serving on {daemon.socket_path}: the socket directory {squat} belongs to uid "
                     "65534, not to this dedupd (uid 0) or root: another user may have made it to answer in "
                     "dedupd's place"], run.stderr
    assert os.listdir(squat) == []
    assert not (tmp_path / "state" / "store").exists()  # refused before the slow start-up work


def test_fifty_half_open_connections_do_not_lock_dedupctl_out_and_a_doubled_key_is_refused(tmp_path: Path,
                                                                                           daemon_factory) -> None:
    daemon = daemon_factory([])
    idle = []
    try:
        for _ in range(50):
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            conn.connect(str(daemon.socket_path))
            with contextlib.suppress(OSError):  # a connection the daemon already dropped to make room
                conn.sendall(b'{"id": 1, "cmd": "sta')
            idle.append(conn)
        assert daemon.status()["state"] in ("scanning", "running")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:  # was: the last "cmd" won, and it paused
            conn.connect(str(daemon.socket_path))
            conn.sendall(b'{"id": 1, "cmd": "status", "cmd": "pause"}\n')
            reply = json.loads(conn.makefile("rb").readline())
        assert reply["ok"] is False and reply["error"]["code"] == "bad_json", reply
        assert daemon.status()["state"] != "paused"
        assert daemon.stop() == 0
    finally:
        for conn in idle:
            conn.close()


def _deep_tree(root: Path) -> tuple[str, str]:
    """Directories of 250-byte names under `root`, made through directory fds (a path could not reach them):
    a file whose path passes PATH_MAX in the last listable directory, and a directory beyond it."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    path = str(root)
    try:
        while len(os.fsencode(path)) < 3940:  # the last listable directory is 3940 to 3950 bytes long
            name = "d" * min(250, 3950 - len(os.fsencode(path)) - 1)
            os.mkdir(name, dir_fd=fd)
            child = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd, path = child, f"{path}/{name}"
        photo = os.open("p" * 250 + ".png", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(photo, b"not read anyway")
        os.close(photo)
        os.mkdir("e" * 250, dir_fd=fd)
    finally:
        os.close(fd)
    return f"{path}/{'p' * 250}.png", f"{path}/{'e' * 250}"


def test_paths_nested_beyond_path_max_are_skipped_and_counted(tmp_path: Path, daemon_factory, photos) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "a.png").write_bytes(photos[0].read_bytes())
    too_long = _deep_tree(root)
    assert all(len(os.fsencode(path)) > 4096 for path in too_long)
    daemon = daemon_factory([root])
    daemon.wait_idle()
    counts = daemon.status()["counts"]
    assert counts["indexed"] == 1 and counts["skipped"].get("path_too_long") == 2, counts
    assert "nested beyond PATH_MAX" in daemon.log_text()
    assert daemon.stop() == 0
