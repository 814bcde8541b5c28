"""The state dir end to end, with real daemon processes: one daemon per state dir, private files."""

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

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
