"""The running daemon's desktop notifications (real private D-Bus) and its control socket under abuse."""

import importlib.util
import json
import os
import select
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.e2e


def _notify_helpers() -> ModuleType:
    """The private-bus and fake-server helpers of tests/service/test_notify.py, shared rather than copied."""
    path = Path(__file__).parents[1] / "service" / "test_notify.py"
    spec = importlib.util.spec_from_file_location("dedupd_notify_helpers", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(shutil.which("dbus-daemon") is None,
                    reason="dbus-daemon is not installed (apt-get install dbus-daemon)")
def test_an_import_burst_is_one_notification_updated_in_place(tmp_path: Path, daemon_factory, photo_bytes) -> None:
    helpers = _notify_helpers()
    config = tmp_path / "bus.conf"
    address = f"unix:path={tmp_path / 'bus'}"
    config.write_text(helpers.BUS_CONFIG.format(address=address))
    bus = subprocess.Popen(["dbus-daemon", f"--config-file={config}", "--nofork", "--print-address"],
                           stdout=subprocess.PIPE, text=True)
    try:
        assert bus.stdout is not None and select.select([bus.stdout], [], [], 30)[0]
        address = bus.stdout.readline().strip()
        server = helpers.NotificationServer(address, tmp_path / "calls.jsonl", "normal", "body")
        root = tmp_path / "Pictures"
        root.mkdir()
        for i in range(10):
            (root / f"p{i}.jpg").write_bytes(photo_bytes[i])
        daemon = daemon_factory([root], extra="", start=False)
        daemon.config.write_text(daemon.config.read_text().replace("desktop = false", "desktop = true"))
        daemon.env["DBUS_SESSION_BUS_ADDRESS"] = address
        daemon.start()
        daemon.wait_idle()
        assert server.notifies() == [], "a library without duplicates makes no notification"
        burst = root / "2026-11-23"
        burst.mkdir()
        for i in range(3):
            shutil.copy(root / f"p{i}.jpg", burst / f"copy{i}.jpg")
        (first,) = server.wait_notifies(1)[:1]
        assert first["replaces_id"] == 0
        # The next copy lands well within the burst gap (10 s) of the others: still the same burst. How many
        # updates the server sees depends on how the copies fall into batches (at most one update a second).
        shutil.copy(root / "p5.jpg", burst / "copy5.jpg")
        daemon.wait_idle()
        calls = helpers.wait_for(lambda: (calls := server.notifies()) and "4 duplicates" in calls[-1]["body"]
                                 and calls, "the update that counts the fourth copy")
        assert [call["replaces_id"] for call in calls[1:]] == [first["returned"]] * (len(calls) - 1), calls
        assert calls[-1]["summary"] == "dedupd: 4 duplicates found", calls[-1]
        assert daemon.stop() == 0
        server.stop()
    finally:
        bus.terminate()
        bus.wait(30)


def test_without_a_bus_the_daemon_logs_once_and_keeps_going(tmp_path: Path, daemon_factory, photo_bytes) -> None:
    root = tmp_path / "Pictures"
    root.mkdir()
    daemon = daemon_factory([root], start=False)
    daemon.config.write_text(daemon.config.read_text().replace("desktop = false", "desktop = true"))
    daemon.env["DBUS_SESSION_BUS_ADDRESS"] = f"unix:path={tmp_path / 'no-bus'}"
    daemon.start()
    (root / "a.jpg").write_bytes(photo_bytes[0])
    shutil.copy(root / "a.jpg", root / "b.jpg")
    daemon.wait_idle()
    assert daemon.status()["counts"]["duplicates"] == 1
    assert daemon.stop() == 0
    warnings = [line for line in daemon.log_text().splitlines() if "notifications" in line and "WARNING" in line]
    assert len(warnings) == 1, warnings


def test_malformed_requests_leave_the_daemon_answering(tmp_path: Path, daemon_factory) -> None:
    root = tmp_path / "Pictures"
    root.mkdir()
    daemon = daemon_factory([root])
    garbage = [b"\x00\xff\xfe garbage\n", b"{not json}\n", b'{"id": 1, "cmd": "nope", "args": {}}\n',
               b'{"id": 2, "cmd": "query", "args": {"path": 5}}\n', b"[]\n", b'"just a string"\n']
    for round_ in range(1000):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(str(daemon.socket_path))
            if round_ % 100 == 0:  # a line over the 1 MiB limit: the server answers too_long and hangs up
                try:
                    client.sendall(b"x" * (2 << 20) + b"\n")
                except (BrokenPipeError, ConnectionResetError):
                    pass
                continue
            if round_ % 100 == 50:  # half a request, then the client goes away
                client.sendall(b'{"id": 3, "cmd": "sta')
                continue
            client.sendall(garbage[round_ % len(garbage)])
            reply = json.loads(client.makefile("rb").readline())
            assert reply["ok"] is False and reply["error"]["code"]
    assert daemon.status()["state"] in ("running", "scanning")
    assert daemon.stop() == 0


@pytest.mark.skipif(os.environ.get("DEDUPD_TEST_SYSCTL") != "1" or os.geteuid() != 0,
                    reason="lowers the host-wide fs.inotify.max_queued_events for a moment: run as root with "
                    "DEDUPD_TEST_SYSCTL=1 (.ci/run does)")
@pytest.mark.parametrize("count", [pytest.param(2000, id="2k"),
                                   pytest.param(10_000, id="10k", marks=pytest.mark.slow)])
def test_inotify_overflow_triggers_a_rescan_and_every_file_is_indexed(tmp_path: Path, daemon_factory,
                                                                      photo_bytes, count: int) -> None:
    knob = Path("/proc/sys/fs/inotify/max_queued_events")
    try:
        saved = knob.read_text()
        knob.write_text("64\n")
    except OSError as exc:
        pytest.skip(f"cannot lower {knob}: {exc}")
    try:
        root = tmp_path / "Pictures"
        root.mkdir()
        daemon = daemon_factory([root])  # its inotify instance gets the lowered queue
    finally:
        knob.write_text(saved)
    folder = root / "burst"
    folder.mkdir()
    for i in range(count):
        (folder / f"f{i:05d}.jpg").write_bytes(photo_bytes[i % 100])
    daemon.wait_idle(timeout=900)
    assert daemon.status()["counts"]["indexed"] == count
    assert "overflow" in daemon.log_text().lower()
    assert daemon.stop() == 0
