"""Desktop notifications on a real private session bus (dbus-daemon) with a real notification service process
(fake_notification_server.py): one notification per burst updated in place, new bursts, a server that appears
late, no bus, the $XDG_RUNTIME_DIR/bus fallback, a hung server, markup escaping and the bounded queue."""

import json
import logging
import select
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dedupd.records import Match
from dedupd.service.notify import QUEUE_LIMIT, DesktopNotifier

#: Generous bound on any single wait so a broken notifier fails the test instead of hanging it.
PATIENCE_S = 30.0
SERVER = Path(__file__).with_name("fake_notification_server.py")
LOGGER = "dedupd.service.notify"
# A session bus with no service directories: nothing on the developer's machine (dunst, mako, ...) can be
# D-Bus-activated onto it, so "no server" stays true (`--session` would read session.conf and its servicedirs).
BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>{address}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""

pytestmark = pytest.mark.skipif(shutil.which("dbus-daemon") is None,
                                reason="dbus-daemon is not installed (apt-get install dbus-daemon)")


class Clock:
    """The notifier's clock: real monotonic time plus what the test has moved it on by (no sleeping)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


def wait_for(condition: Callable[[], Any], what: str) -> Any:
    """Poll until `condition()` is truthy and return it; fail after PATIENCE_S."""
    deadline = time.monotonic() + PATIENCE_S
    while not (result := condition()):
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.02)
    return result


class NotificationServer:
    """A fake_notification_server.py process and the calls it recorded."""

    def __init__(self, address: str, record: Path, mode: str, capabilities: str) -> None:
        self.record = record
        self.process = subprocess.Popen([sys.executable, str(SERVER), address, str(record), "--mode", mode,
                                         "--capabilities", capabilities])
        wait_for(lambda: self.entries() or self.process.poll() is not None, "the notification server")
        assert self.entries()[:1] == [{"event": "ready"}], f"server exited with {self.process.returncode}"

    def entries(self) -> list[dict[str, Any]]:
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines()]

    def notifies(self) -> list[dict[str, Any]]:
        """Notify calls as {name: argument} plus "returned"."""
        names = ("app_name", "replaces_id", "app_icon", "summary", "body", "actions", "hints", "expire_timeout")
        return [dict(zip(names, entry["args"], strict=True), returned=entry.get("returned"))
                for entry in self.entries() if entry.get("member") == "Notify"]

    def wait_notifies(self, count: int) -> list[dict[str, Any]]:
        return wait_for(lambda: len(calls := self.notifies()) >= count and calls, f"{count} Notify call(s)")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(PATIENCE_S)


@dataclass
class Bus:
    """A private dbus-daemon and a way to put a notification server on it."""

    address: str
    runtime_dir: Path
    tmp: Path
    servers: list[NotificationServer]

    def start_server(self, mode: str = "normal", capabilities: str = "body") -> NotificationServer:
        server = NotificationServer(self.address, self.tmp / f"calls-{len(self.servers)}.jsonl", mode, capabilities)
        self.servers.append(server)
        return server


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[Bus]:
    runtime_dir = tmp_path / "run,user"  # a comma must be escaped in a D-Bus address
    runtime_dir.mkdir()
    config = tmp_path / "bus.conf"
    config.write_text(BUS_CONFIG.format(address=f"unix:path={str(runtime_dir / 'bus').replace(',', '%2c')}"))
    daemon = subprocess.Popen(["dbus-daemon", f"--config-file={config}", "--nofork", "--print-address"],
                              stdout=subprocess.PIPE, text=True)
    assert daemon.stdout is not None
    ready, _, _ = select.select([daemon.stdout], [], [], PATIENCE_S)
    assert ready, "dbus-daemon printed no address"
    bus = Bus(daemon.stdout.readline().strip(), runtime_dir, tmp_path, [])
    assert bus.address.startswith("unix:"), bus.address
    yield bus
    for server in bus.servers:
        server.stop()
    daemon.terminate()
    daemon.wait(PATIENCE_S)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def make_notifier() -> Iterator[Callable[..., DesktopNotifier]]:
    """Started notifiers, all stopped at teardown."""
    notifiers: list[DesktopNotifier] = []

    def make(environ: dict[str, str], *, start: bool = True, **options: Any) -> DesktopNotifier:
        notifier = DesktopNotifier(environ=environ, **options)
        notifiers.append(notifier)
        if start:
            notifier.start()
        return notifier

    yield make
    for notifier in notifiers:
        notifier.stop()


def batch(folder: Path, new: range, duplicates: dict[int, int], reports: Path | None = None,
          originals: Path | None = None) -> tuple[list[str], dict[str, list[Match]], dict[str, Path]]:
    """record()'s arguments for photos IMG_nnnn.jpg in `folder`: `duplicates` maps a new photo to its original
    (in `originals`, default `folder`), each with a report in `reports` if given."""
    def name(number: int, where: Path = folder) -> str:
        return str(where / f"IMG_{number:04d}.jpg")

    found = {name(copy): [Match(name(original, originals or folder), "exact")] for copy, original in duplicates.items()}
    written = {path: reports / f"{Path(path).stem}.json" for path in found} if reports else {}
    return [name(number) for number in new], found, written


def notify_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING]


def test_a_burst_is_one_notification_then_one_replace_with_the_same_id(
        bus: Bus, home: Path, make_notifier: Callable[..., DesktopNotifier]) -> None:
    server = bus.start_server()
    notifier = make_notifier({"DBUS_SESSION_BUS_ADDRESS": bus.address, "HOME": str(home)}, burst_gap_s=60.0)
    folder = home / "Pictures" / "2026-11-23"
    reports = home / ".local" / "state" / "dedupd" / "reports"

    notifier.record(*batch(folder, range(1, 101), {42: 7, 43: 8}, reports))
    (first,) = server.wait_notifies(1)
    assert first["replaces_id"] == 0
    assert first["summary"] == "dedupd: 2 duplicates found"
    assert first["body"].splitlines() == [
        "2 duplicates among 100 new photos in ~/Pictures/2026-11-23",
        "IMG_0043.jpg is a copy of IMG_0008.jpg",
        "report: ~/.local/state/dedupd/reports/IMG_0043.json; all duplicates: dedupctl duplicates",
    ]
    assert (first["app_name"], first["app_icon"], first["actions"], first["expire_timeout"]) == (
        "dedupd", "edit-copy", [], -1)
    assert first["hints"] == {"urgency": ["y", 1]}

    notifier.record(*batch(folder / "raw", range(101, 151), {150: 42}, reports, originals=folder))
    _, second = server.wait_notifies(2)
    assert second["replaces_id"] == first["returned"]
    assert second["summary"] == "dedupd: 3 duplicates found"
    assert second["body"].splitlines()[:2] == [
        "3 duplicates among 150 new photos in ~/Pictures/2026-11-23",
        "IMG_0150.jpg is a copy of ~/Pictures/2026-11-23/IMG_0042.jpg",
    ]
    notifier.stop()
    assert len(server.notifies()) == 2
    assert notifier.stats() == {"sent": 2, "failed": 0, "dropped": 0, "state": "disabled"}


def test_updates_are_coalesced_and_the_final_state_is_sent(
        bus: Bus, home: Path, make_notifier: Callable[..., DesktopNotifier]) -> None:
    server = bus.start_server()
    notifier = make_notifier({"DBUS_SESSION_BUS_ADDRESS": bus.address, "HOME": str(home)}, burst_gap_s=60.0)
    for start in range(0, 50, 10):
        notifier.record(*batch(home / "import", range(start, start + 10), {start: start + 1}))
    wait_for(lambda: any(call["summary"] == "dedupd: 5 duplicates found" for call in server.notifies()),
             "the final state")
    calls = server.notifies()
    assert len(calls) < 5
    assert {call["replaces_id"] for call in calls[1:]} <= {calls[0]["returned"]}
    assert calls[-1]["body"].startswith("5 duplicates among 50 new photos in ~/import\n")


def test_stop_sends_the_pending_update(bus: Bus, home: Path, make_notifier: Callable[..., DesktopNotifier]) -> None:
    server = bus.start_server()
    notifier = make_notifier({"DBUS_SESSION_BUS_ADDRESS": bus.address, "HOME": str(home)}, burst_gap_s=60.0)
    notifier.record(*batch(home, range(2), {1: 0}))
    server.wait_notifies(1)
    notifier.record(*batch(home, range(2, 4), {3: 2}))
    notifier.stop()
    calls = server.notifies()
    assert [call["summary"] for call in calls] == ["dedupd: 1 duplicate found", "dedupd: 2 duplicates found"]
    assert calls[1]["replaces_id"] == calls[0]["returned"]


def test_a_new_burst_after_the_gap_gets_a_new_notification(
        bus: Bus, home: Path, make_notifier: Callable[..., DesktopNotifier]) -> None:
    server = bus.start_server()
    clock = Clock()
    notifier = make_notifier({"DBUS_SESSION_BUS_ADDRESS": bus.address, "HOME": str(home)}, burst_gap_s=0.5,
                             clock=clock)
    notifier.record(*batch(home / "a", range(10), {9: 0}))
    server.wait_notifies(1)
    clock.advance(0.6)  # the burst ends: a gap longer than burst_gap_s between two batches
    notifier.record(*batch(home / "b", range(3), {2: 1}))
    first, second = server.wait_notifies(2)
    assert second["replaces_id"] == 0
    assert second["returned"] != first["returned"]
    assert second["body"].startswith("1 duplicate among 3 new photos in ~/b\n")


def test_a_server_that_returns_a_new_id_for_a_replace_is_followed(
        bus: Bus, home: Path, make_notifier: Callable[..., DesktopNotifier]) -> None:
    server = bus.start_server(mode="new-ids")
    notifier = make_notifier({"DBUS_SESSION_BUS_ADDRESS": bus.address, "HOME": str(home)}, burst_gap_s=60.0)
    for count in (1, 2, 3):
        notifier.record(*batch(home, range(count * 10, count * 10 + 2), {count * 10 + 1: count * 10}))
        server.wait_notifies(count)
    first, second, third = server.notifies()
    assert (first["replaces_id"], second["replaces_id"], third["replaces_id"]) == (0, first["returned"],
                                                                                     second["returned"])


def test_markup_servers_get_an_escaped_body(
        bus: Bus, home: Path, make_notifier: Callable[..., DesktopNotifier]) -> None:
    server = bus.start_server(capabilities="body,body-markup")
    notifier = make_notifier({"DBUS_SESSION_BUS_ADDRESS": bus.address, "HOME": str(home)})
    notifier.record([str(home / "Tom & Jerry <2>.jpg")],
                    {str(home / "Tom & Jerry <2>.jpg"): [Match(str(home / "b.jpg"), "cnn", similarity=0.9)]}, {})
    (call,) = server.wait_notifies(1)
    assert call["body"].splitlines()[1] == "Tom &amp; Jerry &lt;2&gt;.jpg looks like b.jpg"


def test_no_server_is_logged_once_and_a_server_that_appears_later_is_used(
        bus: Bus, home: Path, make_notifier: Callable[..., DesktopNotifier], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    clock = Clock()
    notifier = make_notifier({"DBUS_SESSION_BUS_ADDRESS": bus.address, "HOME": str(home)},
                             burst_gap_s=0.5, retry_s=0.1, clock=clock)
    notifier.record(*batch(home / "early", range(5), {4: 0}))
    wait_for(lambda: notifier.stats()["failed"] >= 3, "several failed deliveries")
    notifier.record(*batch(home / "early", range(5, 10), {9: 5}))
    assert notifier.stats()["state"] == "no_server"
    (warning,) = notify_warnings(caplog)
    assert "no desktop notification server" in warning and "ServiceUnknown" in warning

    server = bus.start_server()
    (stale,) = server.wait_notifies(1)  # the burst that waited is delivered once the server is there
    assert stale["body"].startswith("2 duplicates among 10 new photos in ~/early\n")
    clock.advance(0.6)  # the burst ends
    notifier.record(*batch(home / "late", range(3), {2: 1}))
    _, fresh = server.wait_notifies(2)
    assert fresh["replaces_id"] == 0 and fresh["body"].startswith("1 duplicate among 3 new photos in ~/late\n")
    assert len(notify_warnings(caplog)) == 1
    assert notifier.stats()["state"] == "connected"


@pytest.mark.parametrize("environ", [
    pytest.param({"DBUS_SESSION_BUS_ADDRESS": "unix:path={tmp}/no-such-socket"}, id="missing-socket"),
    pytest.param({"XDG_RUNTIME_DIR": "{tmp}"}, id="no-address-no-runtime-bus"),
    pytest.param({}, id="no-environment"),
])
def test_no_bus_is_logged_once_and_record_keeps_returning(
        environ: dict[str, str], tmp_path: Path, make_notifier: Callable[..., DesktopNotifier],
        caplog: pytest.LogCaptureFixture) -> None:
    notifier = make_notifier({key: value.format(tmp=tmp_path) for key, value in environ.items()}, retry_s=0.05)
    for attempt in range(1, 6):
        notifier.record(*batch(tmp_path, range(attempt * 10, attempt * 10 + 10), {attempt * 10: attempt * 10 + 1}))
        wait_for(lambda at_least=attempt: notifier.stats()["failed"] >= at_least, f"failed delivery {attempt}")
    assert notifier.stats()["state"] == "no_bus"
    (warning,) = notify_warnings(caplog)
    assert warning.startswith("desktop notifications disabled until a session bus appears: ")


def test_the_bus_is_found_in_xdg_runtime_dir(
        bus: Bus, home: Path, make_notifier: Callable[..., DesktopNotifier]) -> None:
    server = bus.start_server()
    notifier = make_notifier({"XDG_RUNTIME_DIR": str(bus.runtime_dir), "HOME": str(home)})
    notifier.record(*batch(home, range(2), {1: 0}))
    server.wait_notifies(1)
    assert notifier.stats()["state"] == "connected"


def test_a_hung_server_never_blocks_record_or_stop(
        bus: Bus, home: Path, make_notifier: Callable[..., DesktopNotifier]) -> None:
    server = bus.start_server(mode="hang")
    notifier = make_notifier({"DBUS_SESSION_BUS_ADDRESS": bus.address, "HOME": str(home)}, burst_gap_s=0.5)
    wait_for(lambda: len(server.entries()) > 1, "the notifier's first call to the hung server")
    for start in range(0, 2 * QUEUE_LIMIT, 2):
        notifier.record(*batch(home, range(start, start + 2), {start + 1: start}))
    notifier.stop()
    assert notifier.stats()["state"] == "disabled"
    assert not [thread for thread in threading.enumerate() if thread.name == "dedupd-notify"]


def test_the_queue_is_bounded_and_drops_with_a_count(
        home: Path, make_notifier: Callable[..., DesktopNotifier]) -> None:
    notifier = make_notifier({}, start=False)
    for number in range(QUEUE_LIMIT + 5):
        notifier.record(*batch(home, range(number, number + 1), {}))
    assert notifier.stats()["dropped"] == 5
