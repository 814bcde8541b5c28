"""The control socket answers from the moment it exists: `status` and `wait-idle` asked while the daemon is
still starting (its watchers not built, its start-up scan not queued) answer truthfully. A real daemon process."""

import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from dedupd.cli.client import DaemonUnreachable, call

pytestmark = pytest.mark.e2e

#: Directories under the root: adding their inotify watches keeps the daemon in its start-up for a while.
DIRECTORIES = 4000


def _first_answer(daemon: Any, cmd: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
    """`cmd`'s answer, asked the moment the control socket exists (connecting again until it listens)."""
    socket_path = str(daemon.socket_path)
    deadline = time.monotonic() + 120
    while True:
        assert daemon.process.poll() is None, daemon.log_text()
        assert time.monotonic() < deadline, f"no answer to {cmd}:\n{daemon.log_text()}"
        if os.path.exists(socket_path):
            try:
                return call(socket_path, cmd, args)  # a ProtocolError (the daemon's error reply) fails the test
            except DaemonUnreachable:
                pass  # bound, not listening yet
        time.sleep(0.001)


def test_status_and_wait_idle_during_start_up(tmp_path: Path, daemon_factory: Any, photo_bytes: list[bytes]) -> None:
    root = tmp_path / "library"
    for i in range(DIRECTORIES):
        os.makedirs(root / f"d{i // 100:02d}" / f"e{i % 100:02d}")
    (root / "a.jpg").write_bytes(photo_bytes[0])
    shutil.copyfile(root / "a.jpg", root / "b.jpg")
    daemon = daemon_factory([root], start=False)

    daemon.start(wait_ready=False)
    status = _first_answer(daemon, "status")
    assert [entry["path"] for entry in status["roots"]] == [str(root)]
    # "starting" (or "scanning"); never idle while the start-up scan is not even queued
    assert status["state"] != "running" or status["counts"]["indexed"] == 2, status
    daemon.wait_idle()
    assert daemon.status()["counts"]["indexed"] == 2
    assert daemon.stop() == 0

    shutil.copyfile(root / "a.jpg", root / "c.jpg")  # arrives while the daemon is down: the start-up scan finds it
    daemon.start(wait_ready=False)
    assert _first_answer(daemon, "wait-idle", {"timeout": 240})["idle"] is True
    status = daemon.status()
    assert status["state"] == "running" and status["counts"]["indexed"] == 3, status
    assert daemon.stop() == 0
