"""service/systemd.py against real sockets and real processes: sd_notify over a datagram socket the test binds
(path and abstract) through dedupd's own non-blocking code; journald's native protocol on a socket
bind-mounted over /run/systemd/journal in a private mount namespace; the stderr formats; the rate limit; and
`dedupd run` started by systemd-socket-activate."""

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from dedupd.service import systemd
from dedupd.service.systemd import Notifier, RateLimitFilter, listen_fds, watchdog_interval_s

LIBSYSTEMD = systemd._optional_module("systemd.journal") is not None
NEEDS_SYSTEMD_PYTHON = pytest.mark.skipif(not LIBSYSTEMD, reason="systemd-python (the `systemd` extra) is not "
                                          "installed: .venv/bin/pip install -e '.[dev,systemd]' (builds against "
                                          "libsystemd-dev)")
#: Python source that makes systemd-python unimportable in a child, as on an install without the extra.
WITHOUT_SYSTEMD_PYTHON = "import sys; sys.modules['systemd'] = None\n"
PATIENCE_S = 60


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    """A datagram socket bound on a path, as the service manager's notify socket: (address, socket)."""
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(PATIENCE_S)
        yield path, sock


@pytest.fixture
def abstract_receiver() -> Iterator[tuple[str, socket.socket]]:
    """The same on an abstract address, given as systemd writes it: '@name'."""
    name = f"dedupd-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(PATIENCE_S)
        yield "@" + name, sock


# ---- sd_notify ----

@pytest.mark.parametrize("which", ["receiver", "abstract_receiver"])
def test_an_explicit_address_gets_one_datagram_of_lines(which, request):
    address, sock = request.getfixturevalue(which)
    notifier = Notifier(address)
    assert notifier.enabled and notifier.backend == "socket"
    notifier.notify(READY=1, STATUS="index loaded; scanning roots")
    assert sock.recv(4096) == b"READY=1\nSTATUS=index loaded; scanning roots"


@pytest.mark.parametrize("which", ["receiver", "abstract_receiver"])
def test_notify_socket_from_the_environment_is_spoken_to_directly(which, request, monkeypatch):
    """Also with systemd-python installed: libsystemd's sd_notify would block when nobody reads."""
    address, sock = request.getfixturevalue(which)
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    notifier = Notifier()
    assert notifier.backend == "socket"
    notifier.notify(RELOADING=1, MONOTONIC_USEC=123456)
    assert sock.recv(4096) == b"RELOADING=1\nMONOTONIC_USEC=123456"


@pytest.mark.parametrize("which", ["receiver", "abstract_receiver"])
def test_without_systemd_python_the_environment_address_gets_the_protocol_spoken_directly(which, request):
    address, sock = request.getfixturevalue(which)
    child = WITHOUT_SYSTEMD_PYTHON + (
        "from dedupd.service.systemd import Notifier\n"
        "notifier = Notifier()\n"
        "print(notifier.backend)\n"
        "notifier.notify(STOPPING=1, STATUS='draining')\n")
    run = subprocess.run([sys.executable, "-c", child], env={**os.environ, "NOTIFY_SOCKET": address},
                         capture_output=True, text=True, timeout=PATIENCE_S, check=True)
    assert run.stdout.strip() == "socket"
    assert sock.recv(4096) == b"STOPPING=1\nSTATUS=draining"


def test_without_a_service_manager_notify_does_nothing(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier()
    assert not notifier.enabled and notifier.backend is None
    notifier.notify(READY=1)


@pytest.mark.parametrize("from_environment", [False, True])
def test_an_unreachable_manager_is_logged_once_and_never_raised(tmp_path, monkeypatch, caplog, from_environment):
    gone = str(tmp_path / "nobody-listens.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", gone)
    notifier = Notifier() if from_environment else Notifier(gone)
    with caplog.at_level(logging.WARNING, logger="dedupd.service.systemd"):
        notifier.notify(WATCHDOG=1)
        notifier.notify(WATCHDOG=1)
    assert len(caplog.records) == 1
    assert caplog.records[0].getMessage().startswith(f"cannot notify the service manager at {gone}: ")


# ---- watchdog and socket activation variables ----

def test_the_watchdog_interval_is_half_of_watchdog_usec_for_this_process(monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "60000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert watchdog_interval_s() == 30.0
    monkeypatch.delenv("WATCHDOG_PID")
    assert watchdog_interval_s() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert watchdog_interval_s() is None
    monkeypatch.delenv("WATCHDOG_USEC")
    assert watchdog_interval_s() is None


def test_listen_fds_are_taken_only_when_meant_for_this_process(monkeypatch):
    monkeypatch.setenv("LISTEN_FDS", "2")
    monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
    assert listen_fds() == [3, 4]
    monkeypatch.setenv("LISTEN_PID", str(os.getpid() + 1))
    assert listen_fds() == []
    monkeypatch.delenv("LISTEN_PID")
    assert listen_fds() == []


# ---- the rate limit ----

class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _record(message: str, *args: object, level: int = logging.WARNING,
            name: str = "dedupd.watcher") -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, message, args, None)


def test_repeats_within_the_window_are_dropped_and_counted_on_the_next_one_through():
    clock = FakeClock()
    limit = RateLimitFilter(60.0, clock=clock)
    first = _record("cannot decode %s: %s", "/p/a.jpg", "truncated")
    assert limit.filter(first) and first.getMessage() == "cannot decode /p/a.jpg: truncated"
    for name in ("b", "c", "d"):
        clock.now += 10
        assert not limit.filter(_record("cannot decode %s: %s", f"/p/{name}.jpg", "truncated"))
    clock.now += 30  # 60 s after the first one
    after = _record("cannot decode %s: %s", "/p/e.jpg", "truncated")
    assert limit.filter(after)
    assert after.getMessage() == "cannot decode /p/e.jpg: truncated (3 similar messages suppressed)"
    assert after.SUPPRESSED == 3  # type: ignore[attr-defined]
    clock.now += 1  # a new window opened with that record
    assert not limit.filter(_record("cannot decode %s: %s", "/p/f.jpg", "truncated"))
    clock.now += 60
    one = _record("cannot decode %s: %s", "/p/g.jpg", "truncated")
    assert limit.filter(one) and one.getMessage().endswith("(1 similar message suppressed)")


def test_a_class_is_a_logger_a_template_and_a_level():
    limit = RateLimitFilter(60.0, clock=FakeClock())
    assert limit.filter(_record("cannot decode %s", "/a"))
    assert limit.filter(_record("cannot watch %s", "/a"))
    assert limit.filter(_record("cannot decode %s", "/a", name="dedupd.pipeline"))
    assert limit.filter(_record("cannot decode %s", "/a", level=logging.ERROR))
    assert not limit.filter(_record("cannot decode %s", "/b"))
    quiet = _record("cannot decode %s", "/c")
    assert not limit.filter(quiet) and "suppressed" not in quiet.getMessage()


def test_distinct_messages_of_one_template_are_never_suppressed_only_floods_of_one():
    """Two different config errors on two SIGHUPs within a minute are both logged (issue 13.2); the same error
    for many files is one flood."""
    limit = RateLimitFilter(60.0, clock=FakeClock())
    assert limit.filter(_record("reload refused, keeping the running configuration: %s", "invalid configuration "
                                "in /etc/dedupd/dedupd.toml:\n  unknown key 'treshold' in [phash]",
                                level=logging.ERROR))
    assert limit.filter(_record("reload refused, keeping the running configuration: %s", "config file "
                                "/etc/dedupd/dedupd.toml is not valid TOML: ...", level=logging.ERROR))
    assert not limit.filter(_record("reload refused, keeping the running configuration: %s", "config file "
                                    "/etc/dedupd/dedupd.toml is not valid TOML: ...", level=logging.ERROR))
    assert limit.filter(_record("cannot decode %s: %s", "/p/a.jpg", "truncated"))
    assert limit.filter(_record("cannot decode %s: %s", "/p/b.jpg", "decoder_crash"))
    assert not limit.filter(_record("cannot decode %s: %s", Path("/p/c.jpg"), "truncated"))


def test_info_and_debug_are_never_held_back_and_zero_turns_the_limit_off():
    limit = RateLimitFilter(60.0, clock=FakeClock())
    assert all(limit.filter(_record("encoded %s", str(i), level=logging.INFO)) for i in range(5))
    assert all(limit.filter(_record("encoded %s", str(i), level=logging.DEBUG)) for i in range(5))
    off = RateLimitFilter(0, clock=FakeClock())
    assert all(off.filter(_record("cannot decode %s", str(i))) for i in range(5))


def test_past_max_classes_only_expired_windows_are_forgotten():
    clock = FakeClock()
    limit = RateLimitFilter(60.0, clock=clock)
    for i in range(RateLimitFilter.MAX_CLASSES):
        assert limit.filter(_record(f"message {i}"))
    clock.now += 61
    assert limit.filter(_record("fresh"))
    assert not limit.filter(_record("fresh"))  # its own window survived the clean-up
    assert limit.filter(_record("message 0"))


# ---- configure_logging in real processes ----

LOGGING_CHILD = """
import logging
from dedupd.service.systemd import configure_logging
configure_logging("INFO")
log = logging.getLogger("dedupd.test")
for name in ("a", "b", "c"):
    log.warning("cannot decode %s: %s", f"/p/{name}.jpg", "truncated",
                extra={"FILE": f"/p/{name}.jpg", "REASON": "truncated", "METHOD": "phash"})
log.info("ready")
try:
    raise ValueError("boom")
except ValueError:
    log.exception("handler failed")
print(type(logging.getLogger().handlers[0]).__name__)
"""


def _clean_environ(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("INVOCATION_ID", "JOURNAL_STREAM", "NOTIFY_SOCKET")}
    return {**env, **extra}


def _log_child(env: dict[str, str], *, systemd_python: bool,
               stderr: int | IO[str] = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    source = ("" if systemd_python else WITHOUT_SYSTEMD_PYTHON) + LOGGING_CHILD
    return subprocess.run([sys.executable, "-c", source], env=env, stdout=subprocess.PIPE, stderr=stderr,
                          text=True, timeout=PATIENCE_S, check=True)


def test_outside_systemd_stderr_has_timestamps_and_repeats_are_suppressed():
    run = _log_child(_clean_environ(), systemd_python=LIBSYSTEMD)
    assert run.stdout.strip() == "StreamHandler"
    lines = run.stderr.splitlines()
    assert [line.split(" ", 2)[2] for line in lines[:3]] == [
        "WARNING dedupd.test: cannot decode /p/a.jpg: truncated", "INFO dedupd.test: ready",
        "ERROR dedupd.test: handler failed"]
    assert lines[0][:4].isdigit() and not any("/p/b.jpg" in line for line in lines)
    assert lines[-1] == "ValueError: boom"


def test_under_systemd_without_systemd_python_every_line_has_a_priority_prefix():
    run = _log_child(_clean_environ(INVOCATION_ID=uuid.uuid4().hex), systemd_python=False)
    lines = run.stderr.splitlines()
    assert lines[:3] == ["<4>WARNING dedupd.test: cannot decode /p/a.jpg: truncated", "<6>INFO dedupd.test: ready",
                         "<3>ERROR dedupd.test: handler failed"]
    assert lines[3] == "<3>Traceback (most recent call last):" and lines[-1] == "<3>ValueError: boom"
    assert all(line.startswith("<3>") for line in lines[3:])


def test_journal_stream_counts_only_when_it_names_stderr(tmp_path):
    log_file = tmp_path / "stderr.log"
    with log_file.open("w") as stderr:
        st = os.fstat(stderr.fileno())
        _log_child(_clean_environ(JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}"), systemd_python=False, stderr=stderr)
    assert log_file.read_text().startswith("<4>WARNING dedupd.test: cannot decode /p/a.jpg")
    with log_file.open("w") as stderr:
        _log_child(_clean_environ(JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino + 1}"), systemd_python=False, stderr=stderr)
    assert log_file.read_text()[:4].isdigit()  # a stream inherited from elsewhere: the plain format


def _private_run_command(run_dir: Path) -> list[str]:
    """A command prefix that runs its argument in a private mount namespace where /run is a fresh tmpfs holding
    only systemd/journal, bind-mounted from `run_dir` (needs root, or unprivileged user namespaces)."""
    if not shutil.which("unshare"):
        pytest.skip("needs unshare (util-linux)")
    namespace = ["unshare", "--mount", "--propagation", "private"] if os.geteuid() == 0 else \
        ["unshare", "--user", "--map-root-user", "--mount"]
    script = 'mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/journal && ' \
             'mount --bind "$0" /run/systemd/journal && exec "$@"'
    probe = subprocess.run([*namespace, "sh", "-c", script, str(run_dir), "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a private mount namespace here: {probe.stderr.strip()}")
    return [*namespace, "sh", "-c", script, str(run_dir)]


def _journal_fields(datagram: bytes) -> dict[str, str]:
    """journald's native protocol: `KEY=value` lines, or `KEY`, a little-endian 64-bit size, the value, '\\n'."""
    fields = {}
    while datagram:
        line, _, rest = datagram.partition(b"\n")
        if b"=" in line:
            key, _, value = line.partition(b"=")
            datagram = rest
        else:
            key, size = line, int.from_bytes(rest[:8], "little")
            value, datagram = rest[8:8 + size], rest[8 + size + 1:]
        fields[key.decode()] = value.decode()
    return fields


@NEEDS_SYSTEMD_PYTHON
def test_under_systemd_with_systemd_python_records_reach_journald_with_structured_fields(tmp_path):
    journal_dir = tmp_path / "journal"
    journal_dir.mkdir()
    prefix = _private_run_command(journal_dir)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as journald:
        journald.bind(str(journal_dir / "socket"))
        journald.settimeout(PATIENCE_S)
        run = subprocess.run([*prefix, sys.executable, "-c", LOGGING_CHILD],
                             env=_clean_environ(INVOCATION_ID=uuid.uuid4().hex), capture_output=True, text=True,
                             timeout=PATIENCE_S, check=True)
        assert run.stdout.strip() == "JournalHandler" and run.stderr == ""
        entries = [_journal_fields(journald.recv(1 << 20)) for _ in range(3)]
        journald.settimeout(0.2)
        with pytest.raises(TimeoutError):  # b.jpg and c.jpg were held back
            journald.recv(1 << 20)
    warning, info, error = entries
    assert warning["MESSAGE"] == "cannot decode /p/a.jpg: truncated"
    assert (warning["PRIORITY"], warning["SYSLOG_IDENTIFIER"], warning["LOGGER"]) == ("4", "dedupd", "dedupd.test")
    assert (warning["FILE"], warning["REASON"], warning["METHOD"]) == ("/p/a.jpg", "truncated", "phash")
    assert (info["MESSAGE"], info["PRIORITY"]) == ("ready", "6")
    assert error["PRIORITY"] == "3" and error["MESSAGE"].startswith("handler failed\nTraceback")


@NEEDS_SYSTEMD_PYTHON
def test_under_systemd_without_journald_systemd_python_falls_back_to_prefixed_stderr(tmp_path):
    empty = tmp_path / "journal"
    empty.mkdir()
    run = subprocess.run([*_private_run_command(empty), sys.executable, "-c", LOGGING_CHILD],
                         env=_clean_environ(INVOCATION_ID=uuid.uuid4().hex), capture_output=True, text=True,
                         timeout=PATIENCE_S, check=True)
    assert run.stdout.strip() == "StreamHandler"
    assert run.stderr.startswith("<4>WARNING dedupd.test: cannot decode /p/a.jpg: truncated\n")


# ---- the user unit's sandbox note ----

NOTE_CHILD = "from dedupd.service.systemd import sandbox_note; print(sandbox_note())"


def test_a_user_unit_outside_a_user_namespace_says_it_has_no_mount_sandbox():
    user_unit = _clean_environ(INVOCATION_ID=uuid.uuid4().hex, MANAGERPID="1")
    plain = subprocess.run([sys.executable, "-c", NOTE_CHILD], env=user_unit, capture_output=True, text=True,
                           check=True)
    assert plain.stdout.startswith("running without a mount sandbox")
    not_a_unit = subprocess.run([sys.executable, "-c", NOTE_CHILD], env=_clean_environ(), capture_output=True,
                                text=True, check=True)
    assert not_a_unit.stdout.strip() == "None"
    namespaced = subprocess.run(["unshare", "--user", "--map-root-user", sys.executable, "-c", NOTE_CHILD],
                                env=user_unit, capture_output=True, text=True)
    if namespaced.returncode != 0:
        pytest.skip(f"no user namespaces here: {namespaced.stderr.strip()}")
    assert namespaced.stdout.strip() == "None"


# ---- the daemon, socket-activated ----

@pytest.mark.e2e
def test_dedupd_run_serves_the_socket_systemd_socket_activate_passes_and_speaks_sd_notify(tmp_path, receiver):
    if not shutil.which("systemd-socket-activate"):
        pytest.skip("needs systemd-socket-activate (apt-get install systemd)")
    notify_address, notify = receiver
    photos = tmp_path / "photos"
    photos.mkdir()
    control = tmp_path / "run" / "control.sock"
    control.parent.mkdir()
    config = tmp_path / "dedupd.toml"
    config.write_text(f'state_dir = "{tmp_path / "state"}"\nsocket = "{control}"\nencode_workers = 1\n'
                      f'[cnn]\nenabled = false\n\n[[roots]]\npath = "{photos}"\n')
    activator = subprocess.Popen(
        ["systemd-socket-activate", "-l", str(control), "-E", f"NOTIFY_SOCKET={notify_address}",  # it passes on
         "-E", "WATCHDOG_USEC=2000000",  # only PATH, HOME, USER, TERM and -E
         sys.executable, "-m", "dedupd", "run", "--config", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # systemd-socket-activate listens before it starts anything; a connection makes it exec the daemon. The
        # path appears at bind(), before listen(): until then a connect is refused, so try again.
        while True:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as first:
                try:
                    first.connect(str(control))
                    break
                except (FileNotFoundError, ConnectionRefusedError):
                    pass
            with pytest.raises(subprocess.TimeoutExpired):
                activator.wait(0.01)
        listening = os.stat(control).st_ino
        _wait_for_line(notify, "READY=1", activator)
        _wait_for_line(notify, "WATCHDOG=1", activator)  # pings while the pipeline and the watcher live
        status = subprocess.run([sys.executable, "-m", "dedupd.cli.dedupctl", "--socket", str(control), "--json",
                                 "status"], capture_output=True, text=True, timeout=PATIENCE_S)
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["state"] in ("scanning", "running")
        assert os.stat(control).st_ino == listening  # the daemon served systemd's socket, did not bind its own
        activator.send_signal(signal.SIGHUP)  # what ExecReload= sends
        _wait_for_line(notify, "RELOADING=1", activator)
        _wait_for_line(notify, "READY=1", activator)
        activator.send_signal(signal.SIGTERM)  # the daemon was exec'd in place of systemd-socket-activate
        _wait_for_line(notify, "STOPPING=1", activator)
        assert activator.wait(PATIENCE_S) == 0, activator.communicate()[0]
    finally:
        if activator.poll() is None:
            activator.kill()
        activator.communicate()
    assert control.is_socket()  # systemd's socket file stays


def _wait_for_line(notify: socket.socket, wanted: str, process: subprocess.Popen[str]) -> None:
    """Read notify datagrams until one has the line `wanted`; fails with the process's output if it ends first."""
    notify.settimeout(0.2)
    deadline = time.monotonic() + PATIENCE_S
    while time.monotonic() < deadline:
        try:
            if wanted in notify.recv(4096).decode().splitlines():
                return
        except TimeoutError:
            if process.poll() is not None:  # and nothing left to read
                break
    output = process.communicate(timeout=PATIENCE_S)[0] if process.poll() is not None else "(still running)"
    raise AssertionError(f"no {wanted} from dedupd within {PATIENCE_S} s:\n{output}")
