"""A real `dedupd run` subprocess for end-to-end tests: real config file, inotify, LMDB, Unix socket.

Readiness comes from the daemon's own sd_notify messages on a datagram socket the test binds (as
systemd would), and idleness from `dedupctl wait-idle`; no test sleeps to wait for the daemon.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

START_TIMEOUT_S = 120
#: What the test itself sends to the notify socket after the daemon exited: the reader stops on it.
DRAINED = "X-TEST-DRAINED=1"


@dataclass
class RunningDaemon:
    home: Path
    config: Path
    socket_path: Path
    report_dir: Path
    process: subprocess.Popen[str] | None = None
    notify: socket.socket | None = None
    messages: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    #: A script under tests/ run instead of `python -m dedupd run` (same `--config`): a daemon built with a hook.
    launcher: Path | None = None

    def start(self, wait_ready: bool = True) -> None:
        notify_path = self.home / f"notify-{len(self.messages)}-{time.monotonic_ns()}.sock"
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(notify_path))
        self._notify_path = notify_path
        self.notify.settimeout(0.2)
        self._arrived = threading.Condition()
        # Read the notify socket all the time, as a service manager does: a full socket would block the daemon.
        self._reader = threading.Thread(target=self._read_notify, args=(self.notify,), daemon=True)
        self._reader.start()
        env = {**os.environ, "NOTIFY_SOCKET": str(notify_path), "DEDUPD_CONFIG": str(self.config), **self.env}
        self.log = open(self.home / "daemon.log", "a")  # noqa: SIM115 - closed in stop()
        entry = [str(self.launcher)] if self.launcher else ["-m", "dedupd", "run"]
        self.process = subprocess.Popen([sys.executable, *entry, "--config", str(self.config)],
                                        env=env, stdout=self.log, stderr=subprocess.STDOUT, text=True)
        self._seen = len(self.messages)
        if wait_ready:
            self.wait_message("READY=1")

    def _read_notify(self, sock: socket.socket) -> None:
        while True:
            try:
                message = sock.recv(65536).decode()
            except TimeoutError:
                continue
            except OSError:
                return
            if message == DRAINED:
                return
            with self._arrived:
                self.messages.append(message)
                self._arrived.notify_all()

    def wait_message(self, wanted: str, timeout: float = START_TIMEOUT_S) -> str:
        """Wait for a notify message with the line `wanted` that arrived after the last one waited for."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        with self._arrived:
            while True:
                for index in range(self._seen, len(self.messages)):
                    if wanted in self.messages[index].splitlines():
                        self._seen = index + 1
                        return self.messages[index]
                self._seen = len(self.messages)
                if self.process.poll() is not None:
                    raise AssertionError(f"dedupd exited with {self.process.returncode}:\n{self.log_text()}")
                if time.monotonic() > deadline:
                    raise AssertionError(f"no {wanted} from dedupd within {timeout} s:\n{self.log_text()}")
                self._arrived.wait(0.5)

    def log_text(self) -> str:
        return (self.home / "daemon.log").read_text()

    def ctl(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        run = subprocess.run([sys.executable, "-m", "dedupd.cli.dedupctl", "--socket", str(self.socket_path), *args],
                             capture_output=True, text=True, timeout=timeout)
        if check and run.returncode != 0:
            raise AssertionError(f"dedupctl {' '.join(args)} -> {run.returncode}\n{run.stdout}\n{run.stderr}\n"
                                 f"{self.log_text()[-4000:]}")
        return run

    def ctl_json(self, *args: str) -> Any:
        return json.loads(self.ctl("--json", *args).stdout)

    def wait_idle(self, timeout: float = 240) -> None:
        self.ctl("wait-idle", "--timeout", str(timeout), timeout=timeout + 30)

    def status(self) -> dict[str, Any]:
        return self.ctl_json("status")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(timeout=120)
        if self.notify is not None:
            # The daemon has exited, so all it sent is queued; a datagram of ours queues behind it, and the
            # reader stops when it reads that one: every message of the daemon (STOPPING=1) is in `messages`.
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
                sender.sendto(DRAINED.encode(), str(self._notify_path))
            self._reader.join(60)
            assert not self._reader.is_alive(), "the notify reader did not drain the socket"
            self.notify.close()
        self.log.close()
        return code

    def reports(self) -> list[dict[str, Any]]:
        return [json.loads(p.read_text()) for p in sorted(self.report_dir.glob("????-??-??/*.json"))]


def write_config(home: Path, roots: list[Path], extra: str = "") -> tuple[Path, Path, Path]:
    """A config for the test: short settle (unless `extra` sets one), no desktop bus, the given roots."""
    state = home / "state"
    reports = home / "reports"
    sock = home / "run" / "control.sock"
    lines = [f'state_dir = "{state}"', f'report_dir = "{reports}"', f'socket = "{sock}"', "encode_workers = 2"]
    lines += [extra] + ([] if "settle_ms" in extra else ["settle_ms = 300"])
    lines += ["[notify]", "desktop = false"]
    for root in roots:
        lines += ["", "[[roots]]", f'path = "{root}"']
    config = home / "dedupd.toml"
    config.write_text("\n".join(lines) + "\n")
    return config, sock, reports


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[Any]:
    started: list[RunningDaemon] = []

    def make(roots: list[Path], extra: str = "", start: bool = True) -> RunningDaemon:
        config, sock, reports = write_config(tmp_path, roots, extra)
        daemon = RunningDaemon(tmp_path, config, sock, reports)
        if start:
            daemon.start()
        started.append(daemon)
        return daemon

    yield make
    for daemon in started:
        if daemon.process is not None and daemon.process.poll() is None:
            daemon.process.kill()
            daemon.process.wait()


@dataclass
class ActingUser:
    """The user who resolves: HOME, trash, state dir and runtime dir of their own under tmp_path (dedupctl and
    the review server inherit them), and the two-group library the action tests resolve."""

    home: Path

    @staticmethod
    def jpeg(source: Path, dest: Path, width: int = 320, quality: int = 90) -> None:
        with Image.open(source) as image:
            rgb = image.convert("RGB")
        rgb.thumbnail((width, width))
        dest.parent.mkdir(parents=True, exist_ok=True)
        rgb.save(dest, "JPEG", quality=quality)

    def library(self, root: Path, photos: list[Path]) -> dict[str, Path]:
        """Two groups: a byte copy (with an XMP sidecar) of one photo, and a smaller re-encode of another."""
        files = {"a": root / "a.jpg", "a_copy": root / "copies" / "a_copy.jpg", "b": root / "b.jpg",
                 "b_small": root / "small" / "b_small.jpg", "c": root / "c.jpg"}
        self.jpeg(photos[0], files["a"])
        files["a_copy"].parent.mkdir(parents=True)
        shutil.copyfile(files["a"], files["a_copy"])
        self.jpeg(photos[2], files["b"], width=400)
        self.jpeg(photos[2], files["b_small"], width=240, quality=80)
        self.jpeg(photos[3], files["c"])
        for age, name in enumerate(("a", "a_copy", "b", "b_small", "c")):
            os.utime(files[name], (1_600_000_000 + age, 1_600_000_000 + age))  # a is older than its copy: kept
        sidecar = root / "copies" / "a_copy.jpg.xmp"
        sidecar.write_text("<x:xmpmeta xmlns:x='adobe:ns:meta/'/>")
        files["sidecar"] = sidecar
        return files

    def started(self, daemon_factory: Any, root: Path, photos: list[Path]) -> tuple[RunningDaemon, dict[str, Path]]:
        """The two-group library under `root`, indexed by a running daemon."""
        files = self.library(root, photos)
        daemon = daemon_factory([root])
        daemon.wait_idle()
        return daemon, files

    @staticmethod
    def tree(root: Path) -> dict[str, tuple[bytes, int]]:
        """Every file under root: its bytes and mtime."""
        return {str(p): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(root.rglob("*")) if p.is_file()}

    def trashed(self) -> dict[str, str]:
        """Original path -> trashed file, from the home trash's .trashinfo files (one cut short by a kill while
        it was written is listed under "")."""
        trash = self.home / ".local" / "share" / "Trash"
        out = {}
        for info in sorted((trash / "info").glob("*.trashinfo")):
            lines = dict(line.split("=", 1) for line in info.read_text().splitlines()[1:] if "=" in line)
            out[lines.get("Path", "")] = str(trash / "files" / info.name.removesuffix(".trashinfo"))
        return out


@pytest.fixture
def user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ActingUser:
    home = tmp_path / "home"
    (home / "run").mkdir(parents=True, mode=0o700)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local" / "share"))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / ".local" / "state"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(home / "run"))
    monkeypatch.setenv("DEDUPD_SYSTEM", "0")  # root in CI: still the user's locations
    return ActingUser(home)
