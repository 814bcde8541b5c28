"""What an operator sees from a real daemon (issue 13): its INFO voice, the reload reply, clear refusals of
wrong paths, wait-idle while paused, status right after wait-idle, and a real file name that is not UTF-8."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def _library(tmp_path: Path, photo_bytes: list[bytes], count: int) -> Path:
    library = tmp_path / "lib"
    library.mkdir()
    for i in range(count):
        (library / f"p{i}.jpg").write_bytes(photo_bytes[i])
    return library


def _wait_for_log(daemon, text: str, timeout: float = 90.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = daemon.log_text()
        if text in log:
            return log
        time.sleep(0.2)
    raise AssertionError(f"{text!r} never logged:\n{daemon.log_text()[-3000:]}")


def test_the_daemon_says_at_info_what_it_found_and_when_the_first_scan_is_done(tmp_path: Path, daemon_factory,
                                                                               photo_bytes) -> None:
    library = _library(tmp_path, photo_bytes, 3)
    shutil.copy(library / "p0.jpg", library / "p0 copy.jpg")
    daemon = daemon_factory([library])
    daemon.wait_idle()
    log = _wait_for_log(daemon, "first scan done: ")
    assert "4 images encoded" in log and f"config {daemon.config}" in log
    log = _wait_for_log(daemon, "1 duplicate among ")  # logged once the burst is over (10 s without another)
    assert "is a copy of" in log and "all duplicates: dedupctl duplicates" in log
    assert log.count("1 duplicate among ") == 1
    assert daemon.stop() == 0


def test_zero_roots_are_said(tmp_path: Path, daemon_factory) -> None:
    daemon = daemon_factory([])
    _wait_for_log(daemon, f"no roots configured: nothing is watched; add [[roots]] to {daemon.config} ")
    assert daemon.stop() == 0


def test_the_config_file_read_from_the_default_location_is_named(tmp_path: Path) -> None:
    """Started without --config, the daemon names the user's file it read, not "built-in defaults"."""
    home = tmp_path / "home"
    config = home / ".config/dedupd/dedupd.toml"
    config.parent.mkdir(parents=True)
    config.write_text(f'state_dir = "{tmp_path / "state"}"\nsocket = "{tmp_path / "s.sock"}"\n[cnn]\n'
                      "enabled = false\n[notify]\ndesktop = false\n")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DEDUPD_", "XDG_"))}
    daemon = subprocess.Popen([sys.executable, "-m", "dedupd", "run"], stderr=subprocess.PIPE, text=True,
                              env=env | {"HOME": str(home), "DEDUPD_SYSTEM": "0"})
    try:
        for line in daemon.stderr:  # type: ignore[union-attr]
            if " ready: " in line:
                assert f"config {config}" in line, line
                break
    finally:
        daemon.terminate()
        daemon.wait(60)


def test_wrong_paths_are_refused_with_what_they_are(tmp_path: Path, daemon_factory, photo_bytes) -> None:
    library = _library(tmp_path, photo_bytes, 1)
    daemon = daemon_factory([library])
    daemon.wait_idle()
    done = daemon.ctl("query", str(library), check=False)
    assert (done.returncode, done.stderr) == (1, f"dedupctl: {library} is a directory, not a file (for a folder: "
                                                 "dedupctl needles DIR)\n")
    done = daemon.ctl("needles", str(library / "p0.jpg"), check=False)
    assert (done.returncode, done.stderr) == (1, f"dedupctl: {library / 'p0.jpg'} is a file, not a directory (for one "
                                                 "file: dedupctl query FILE)\n")
    done = daemon.ctl("rescan", str(library / "nodir"), check=False)
    assert (done.returncode, done.stderr) == (1, f"dedupctl: no such file or directory: {library / 'nodir'} (and no "
                                                 "records under it)\n")
    assert daemon.ctl("rescan", str(library)).stdout == f"rescan scheduled: {library}\n"
    assert daemon.stop() == 0


def test_reload_says_which_changes_need_a_restart(tmp_path: Path, daemon_factory) -> None:
    daemon = daemon_factory([])
    daemon.config.write_text(daemon.config.read_text().replace("settle_ms = 300", "settle_ms = 400"))
    done = daemon.ctl("reload")
    assert done.stdout.splitlines() == [
        "reloaded; changed: settle_ms",
        "needs a restart to take effect: settle_ms (systemctl restart dedupd, or systemctl --user restart dedupd)"]
    assert daemon.ctl_json("reload") == {"changed": [], "restart_needed": []}
    assert daemon.stop() == 0


def test_wait_idle_while_paused_says_so_and_status_agrees_with_wait_idle(tmp_path: Path, daemon_factory,
                                                                        photo_bytes) -> None:
    library = _library(tmp_path, photo_bytes, 0)
    daemon = daemon_factory([library])
    daemon.wait_idle()
    assert daemon.status()["state"] == "running"
    daemon.ctl("pause")
    (library / "new.jpg").write_bytes(photo_bytes[1])
    deadline = time.monotonic() + 60
    while daemon.status()["counts"]["pending"] == 0:
        assert time.monotonic() < deadline, "the new file never became pending"
        time.sleep(0.1)
    done = daemon.ctl("wait-idle", "--timeout", "100", check=False)
    assert done.returncode == 1 and "dedupd is paused with" in done.stderr and "dedupctl resume" in done.stderr
    daemon.ctl("resume")
    daemon.wait_idle()
    status = daemon.status()  # at once: no lag behind wait-idle
    assert status["state"] == "running" and status["scan"]["running"] is False
    assert status["counts"]["indexed"] == 1
    assert daemon.stop() == 0


def test_a_real_non_utf8_name_is_exact_with_null_and_json_and_escaped_in_text(tmp_path: Path, daemon_factory,
                                                                             photo_bytes) -> None:
    library = _library(tmp_path, photo_bytes, 1)
    odd = os.fsencode(library) + b"/\xff\xfe copy.jpg"
    with open(odd, "wb") as handle:
        handle.write(photo_bytes[0])
    daemon = daemon_factory([library])
    daemon.wait_idle()
    listed = subprocess.run([sys.executable, "-m", "dedupd.cli.dedupctl", "--socket", str(daemon.socket_path),
                             "to-remove", "--null"], capture_output=True, timeout=60, check=True).stdout
    assert listed.endswith(b"\0") and all(os.path.exists(path) for path in listed.split(b"\0")[:-1])
    assert odd in listed.split(b"\0") or os.fsencode(library / "p0.jpg") in listed.split(b"\0")
    groups = json.loads(daemon.ctl("--json", "duplicates").stdout)["groups"]
    assert {os.fsencode(member["path"]) for member in groups[0]} == {odd, os.fsencode(library / "p0.jpg")}
    text = daemon.ctl("duplicates").stdout
    assert f"{library}/\\xff\\xfe copy.jpg" in text
    assert daemon.stop() == 0
