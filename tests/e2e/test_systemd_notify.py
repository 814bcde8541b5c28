"""The daemon under a service manager's notify socket: READY after the index, STATUS, WATCHDOG, STOPPING."""

import re
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

WEDGING_DAEMON = Path(__file__).with_name("wedging_daemon.py")
STALLED = "STATUS=stalled: a pipeline stage or a watcher makes no progress"


#: The STATUS= line while the gated last file is held: 79 images done of 80, with the rate and the estimate.
SCANNING_79 = re.compile(r"STATUS=scanning: 79 of 80 images(, .*)?")


def _wait_for_status(daemon, pattern: re.Pattern[str], timeout: float = 120.0) -> None:
    """Wait for a STATUS= line matching `pattern` (its rate and estimate vary, so no exact line to wait for)."""
    deadline = time.monotonic() + timeout
    while not any(pattern.fullmatch(line) for line in _lines(list(daemon.messages))):
        assert time.monotonic() < deadline and daemon.process.poll() is None, _lines(daemon.messages)
        time.sleep(0.1)


def _lines(messages: list[str]) -> list[str]:
    return [line for message in messages for line in message.splitlines()]


def _wait_for_log(daemon, text: str, timeout: float = 120) -> None:
    """Wait until the daemon's log has `text` (the daemon must stay up meanwhile)."""
    deadline = time.monotonic() + timeout
    while text not in daemon.log_text():
        assert daemon.process.poll() is None, f"dedupd exited with {daemon.process.returncode}:\n{daemon.log_text()}"
        assert time.monotonic() < deadline, f"no {text!r} in the log within {timeout} s:\n{daemon.log_text()}"
        time.sleep(0.05)


def test_ready_after_index_status_during_scan_watchdog_and_stopping(tmp_path: Path, daemon_factory,
                                                                     photo_bytes, decode_faults_env) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    for i in range(79):
        (root / f"p{i:03d}.jpg").write_bytes(photo_bytes[i])
    # The decode faults hold this file until the test lets it go, so the scan is seen in progress on any machine.
    (root / "gate_079.jpg").write_bytes(photo_bytes[79])
    gates = tmp_path / "gates"
    gates.mkdir()
    daemon = daemon_factory([root], extra="decode_timeout_s = 3600", start=False)
    daemon.env.update({"WATCHDOG_USEC": "1000000",  # a ping every 0.5 s is expected
                       **decode_faults_env, "DECODE_FAULTS_GATE_DIR": str(gates)})
    daemon.start()
    _wait_for_status(daemon, SCANNING_79)
    (gates / "gate_079.jpg.release").touch()
    daemon.wait_idle()
    daemon.wait_message("STATUS=watching", timeout=30)
    lines = _lines(daemon.messages)
    scanning = next(line for line in lines if SCANNING_79.fullmatch(line))
    assert lines.index("READY=1") < lines.index(scanning) < lines.index("STATUS=watching")
    for _ in range(3):
        daemon.wait_message("WATCHDOG=1", timeout=15)
    assert daemon.stop() == 0
    assert "STOPPING=1" in _lines(daemon.messages)

    # Restarted on a stored index: READY is sent only once it is loaded, so the first answer already has it.
    daemon.env.pop("PYTHONPATH")
    daemon.start()
    assert daemon.status()["index"]["dct"] == 80
    assert daemon.stop() == 0


def test_a_wedged_pipeline_stops_the_watchdog_pings(tmp_path: Path, daemon_factory, photo_bytes) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    daemon = daemon_factory([root], start=False)
    daemon.launcher = WEDGING_DAEMON  # its commit stage wedges on wedge*
    daemon.env["WATCHDOG_USEC"] = "1000000"
    daemon.start()
    daemon.wait_message("WATCHDOG=1", timeout=30)
    (root / "wedge.jpg").write_bytes(photo_bytes[0])
    _wait_for_log(daemon, "test launcher: the commit stage wedges on purpose")
    # The stall window is 5 s here: then the daemon itself says it stopped pinging, and stays up (systemd,
    # not the daemon, decides what happens next).
    daemon.wait_message(STALLED, timeout=120)
    _wait_for_log(daemon, "watchdog pings stop")
    assert daemon.status()["state"] in ("running", "scanning")  # still answering on its socket
    lines = _lines(daemon.messages)
    assert "WATCHDOG=1" not in lines[lines.index(STALLED):], "pinged after it said it stalled"
    assert daemon.process is not None and daemon.process.poll() is None
    daemon.stop(9)
