"""A real `dedupd run` subprocess for end-to-end tests: real config file, inotify, LMDB, Unix socket.

Readiness comes from the daemon's own sd_notify messages on a datagram socket the test binds (as
systemd would), and idleness from `dedupctl wait-idle`; no test sleeps to wait for the daemon.
"""

import json
import os
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
        self.process = subprocess.Popen([sys.executable, "-m", "dedupd", "run", "--config", str(self.config)],
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
