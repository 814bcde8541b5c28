"""An idle daemon holds no encode worker (issue 13.16: ~70 MiB each): they start when a file arrives and stop
after `encode_idle_stop_s` without one. A real daemon process, its real worker processes read from /proc."""

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e


def _workers(daemon_pid: int) -> list[int]:
    """Live encode workers of the daemon: its spawned children (`spawn_main`) other than the resource tracker."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            command = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError):
            continue  # exited while we looked
        if int(fields[1]) == daemon_pid and fields[0] != "Z" and b"spawn_main" in command \
                and b"resource_tracker" not in command:
            found.append(int(stat.parent.name))
    return found


def _poll(condition: Callable[[], bool], what: str, daemon: Any) -> None:
    """Wait for something the daemon does on its own; the cap only keeps a broken build from hanging the run."""
    deadline = time.monotonic() + 180
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"never happened: {what}\n{daemon.log_text()[-3000:]}")
        time.sleep(0.1)


def test_workers_start_with_work_and_stop_when_idle(tmp_path: Path, daemon_factory: Any,
                                                    photo_bytes: list[bytes]) -> None:
    root = tmp_path / "library"
    root.mkdir()
    for i in range(2):
        (root / f"p{i}.jpg").write_bytes(photo_bytes[i])
    daemon = daemon_factory([root], extra="encode_idle_stop_s = 1.0")
    daemon.wait_idle()
    pid = daemon.process.pid
    before = daemon.status()["counts"]
    assert before["indexed"] == 2 and before["decodes"] == 2  # decoded by workers started for the scan
    _poll(lambda: daemon.status()["counts"]["encode_workers"] == 0 and not _workers(pid),
          "the idle daemon stops its encode workers", daemon)
    outside = tmp_path / "new.jpg"
    outside.write_bytes(photo_bytes[2])
    os.rename(outside, root / "new.jpg")  # a new file arrives: workers start again to decode it
    daemon.wait_idle()
    after = daemon.status()["counts"]
    assert after["indexed"] == 3 and after["decodes"] == 3  # its decode: a worker ran again
    _poll(lambda: daemon.status()["counts"]["encode_workers"] == 0 and not _workers(pid),
          "and stops them once idle again", daemon)
    assert daemon.stop() == 0
