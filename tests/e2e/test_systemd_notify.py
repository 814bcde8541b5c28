"""The daemon under a service manager's notify socket: READY after the index, STATUS, WATCHDOG, STOPPING."""

import re
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def _lines(messages: list[str]) -> list[str]:
    return [line for message in messages for line in message.splitlines()]


def test_ready_after_index_status_during_scan_watchdog_and_stopping(tmp_path: Path, daemon_factory,
                                                                     photo_bytes) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    for i in range(80):
        (root / f"p{i:03d}.jpg").write_bytes(photo_bytes[i])
    daemon = daemon_factory([root], start=False)
    daemon.env["WATCHDOG_USEC"] = "1000000"  # a ping every 0.5 s is expected
    daemon.start()
    daemon.wait_idle()
    daemon.wait_message("STATUS=watching", timeout=30)
    lines = _lines(daemon.messages)
    assert lines.index("READY=1") < lines.index("STATUS=watching")
    assert any(re.fullmatch(r"STATUS=scanning [\d,]+/80", line) for line in lines), lines
    for _ in range(3):
        daemon.wait_message("WATCHDOG=1", timeout=15)
    assert daemon.stop() == 0
    assert "STOPPING=1" in _lines(daemon.messages)

    # Restarted on a stored index: READY is sent only once it is loaded, so the first answer already has it.
    daemon.start()
    assert daemon.status()["index"]["dct"] == 80
    assert daemon.stop() == 0


def test_a_wedged_pipeline_stops_the_watchdog_pings(tmp_path: Path, daemon_factory, photo_bytes) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    daemon = daemon_factory([root], start=False)
    daemon.env.update({"WATCHDOG_USEC": "1000000", "DEDUPD_TEST_WEDGE": "1"})
    daemon.start()
    daemon.wait_message("WATCHDOG=1", timeout=30)
    (root / "wedge.jpg").write_bytes(photo_bytes[0])
    deadline = time.monotonic() + 90
    pings = 0
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:  # the stall window is 5 s here; then 8 missed intervals in a row
        now_pings = sum("WATCHDOG=1" in m.splitlines() for m in list(daemon.messages))
        if now_pings != pings:
            pings, quiet_since = now_pings, time.monotonic()
        elif time.monotonic() - quiet_since > 4:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the daemon kept pinging the watchdog with a wedged pipeline")
    daemon.stop(9)

