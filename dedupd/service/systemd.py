"""systemd integration: sd_notify, the watchdog interval, socket activation, and logging for the journal.

Owns talking to the service manager and how log records leave the process.

Notify: one datagram of `KEY=VALUE` lines to the AF_UNIX socket named by `NOTIFY_SOCKET` (a leading '@' means
the abstract namespace). With systemd-python installed (the `systemd` extra) libsystemd's `sd_notify` sends it;
otherwise this module speaks the protocol itself. Without `NOTIFY_SOCKET` every call is a no-op, so the daemon
runs the same under systemd, in a terminal or in tests.

Logging (`configure_logging`): under systemd and with systemd-python, records go to journald over its native
protocol with structured fields; under systemd without it, to stderr with `<N>` syslog priority prefixes (journald
reads them from the unit's stream); elsewhere, to stderr with timestamps. Every handler drops repeats of the same
warning or error within `rate_limit_s` and says how many it dropped (`RateLimitFilter`).

Structured-field convention: a log call about one file, method or skip reason passes them as upper-case journal
fields in `extra`, besides naming them in the message text (the text is all a stderr reader gets):

    log.warning("cannot decode %s: %s", path, detail, extra={"FILE": path, "REASON": reason.value})

`FILE=` is an absolute path, `METHOD=` a method name (`phash`, `cnn`, ...), `REASON=` a `SkipReason` value or a
short error class. In the journal they can be filtered on: `journalctl -u dedupd REASON=truncated`.
"""

import importlib
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import ModuleType

log = logging.getLogger(__name__)

#: The journal's SYSLOG_IDENTIFIER for every record dedupd logs.
SYSLOG_IDENTIFIER = "dedupd"
#: Where journald listens for its native protocol (libsystemd's sd_journal_send writes here).
JOURNAL_SOCKET = "/run/systemd/journal/socket"
#: Records at or above this level are rate-limited; debug and info lines are never held back.
RATE_LIMITED_FROM = logging.WARNING


def _optional_module(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


# systemd-python, from the `systemd` extra: it has no wheels (it builds against libsystemd-dev), so it may be absent.
_sd_journal = _optional_module("systemd.journal")


class Notifier:
    """Sends sd_notify messages; failures are logged once and never raised.

    `address` None means `$NOTIFY_SOCKET`. The protocol is spoken by this module even when systemd-python is
    installed: libsystemd's sd_notify blocks (holding the GIL) once the manager stops reading, which would
    freeze the whole daemon; a non-blocking send drops one message instead.
    """

    def __init__(self, address: str | None = None) -> None:
        address = os.environ.get("NOTIFY_SOCKET") if address is None else address
        self._address = "\0" + address[1:] if address and address.startswith("@") else address
        self._warned = False

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    @property
    def backend(self) -> str | None:
        """"libsystemd" or "socket" (this module's protocol code); None when there is no service manager."""
        if not self._address:
            return None
        return "socket"

    def notify(self, **fields: str | int) -> None:
        """`notify(READY=1, STATUS="scanning 10/40")` sends one datagram with those lines."""
        if not self._address:
            return
        message = "\n".join(f"{key}={value}" for key, value in fields.items())
        kind = socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
        try:
            with socket.socket(socket.AF_UNIX, kind) as sock:
                sock.sendto(message.encode(), self._address)
        except OSError as exc:
            if not self._warned:
                log.warning("cannot notify the service manager at %s: %s", self._address.lstrip("\0"), exc)
                self._warned = True


def watchdog_interval_s() -> float | None:
    """Half of WATCHDOG_USEC (when the watchdog is for this process), as systemd recommends."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 2_000_000
    except ValueError:
        return None


def listen_fds() -> list[int]:
    """File descriptors passed by socket activation (LISTEN_FDS from fd 3), if meant for this process."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return []
    try:
        count = int(os.environ.get("LISTEN_FDS", "0"))
    except ValueError:
        return []
    return list(range(3, 3 + count))


# ---------------------------------------------------------------------------------------------- service context


def _environ(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if environ is None else environ


def stderr_is_journal(environ: Mapping[str, str] | None = None, fd: int = 2) -> bool:
    """Whether `fd` is the journal stream systemd connected: `JOURNAL_STREAM` names its device and inode.

    The variable alone is not enough: a child whose stderr was redirected elsewhere inherits it.
    """
    value = _environ(environ).get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    try:
        st = os.fstat(fd)
        return (st.st_dev, st.st_ino) == (int(device), int(inode))
    except (OSError, ValueError):
        return False


def under_systemd(environ: Mapping[str, str] | None = None, fd: int = 2) -> bool:
    """Run as a systemd unit: stderr is its journal stream, or `INVOCATION_ID` is set and stderr is no terminal.

    `INVOCATION_ID` leaks into shells started from a unit (a terminal emulator run as a user service), whose
    stderr is a terminal: those keep the plain format.
    """
    if stderr_is_journal(environ, fd):
        return True
    try:
        interactive = os.isatty(fd)
    except OSError:
        interactive = False
    return bool(_environ(environ).get("INVOCATION_ID")) and not interactive


def in_user_namespace() -> bool:
    """Whether this process runs in a user namespace (as `PrivateUsers=yes` gives a user unit)."""
    try:
        with open("/proc/self/uid_map") as handle:
            mapping = handle.read().split()
    except OSError:
        return False
    return mapping != ["0", "0", "4294967295"]


def sandbox_note(environ: Mapping[str, str] | None = None) -> str | None:
    """A line for the log when a user unit runs without its mount sandbox, else None.

    A user manager can only mount (ProtectSystem=, ProtectHome=, PrivateTmp=) inside a user namespace, so the
    user unit's sandbox is a drop-in that `dedupd install-unit --user` adds only where user namespaces work.
    """
    env = _environ(environ)
    if not (env.get("MANAGERPID") and env.get("INVOCATION_ID")) or in_user_namespace():
        return None
    return ("running without a mount sandbox: this user unit has no user namespace (PrivateUsers=); "
            "`dedupd install-unit --user` adds the sandbox where unprivileged user namespaces work")


# ---------------------------------------------------------------------------------------------- logging


def syslog_priority(levelno: int) -> int:
    """The syslog priority (journald's PRIORITY=) of a logging level."""
    for level, priority in ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6)):
        if levelno >= level:
            return priority
    return 7


class SyslogPrefixFormatter(logging.Formatter):
    """Prefixes every line (tracebacks too) with `<N>`, which journald turns into the line's priority."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{syslog_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).splitlines())


@dataclass(slots=True)
class _Window:
    started: float
    suppressed: int = 0


def _is_file_path(value: object) -> bool:
    """An argument that names a file: what varies within a flood of one error (each file of a share, say)."""
    if isinstance(value, os.PathLike):
        return True
    return isinstance(value, str) and value.startswith("/") and "\n" not in value and ": " not in value


def message_identity(record: logging.LogRecord) -> tuple[object, ...]:
    """What makes two records "the same message": logger, level, template and every argument except file
    paths. So `cannot decode %s: %s` for a thousand files with the same reason is one message, while two
    different config errors (`reload refused ...: %s` with two different texts) are two."""
    template = record.msg if isinstance(record.msg, str) else type(record.msg).__qualname__
    args = record.args if isinstance(record.args, tuple) else (record.args,) if record.args else ()
    return (record.name, record.levelno, template,
            *(None if _is_file_path(arg) else str(arg) for arg in args))


class RateLimitFilter(logging.Filter):
    """Lets one record per message identity (`message_identity`) through per `interval_s`; counts the rest.

    The first record of a class passes and opens a window; repeats inside the window are dropped and counted;
    the first repeat after the window passes with " (N similar messages suppressed)" appended (and a
    SUPPRESSED=N journal field) and opens the next window. A count whose class never recurs is not reported.
    Records below `min_level` always pass. Thread-safe; `clock` is injectable for tests.
    """

    #: Past this many classes, expired windows are forgotten (message templates are few; this bounds the odd one).
    MAX_CLASSES = 4096

    def __init__(self, interval_s: float, *, min_level: int = RATE_LIMITED_FROM,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval_s = interval_s
        self.min_level = min_level
        self._clock = clock
        self._windows: dict[tuple[object, ...], _Window] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < self.min_level or self.interval_s <= 0:
            return True
        key = message_identity(record)
        now = self._clock()
        with self._lock:
            window = self._windows.get(key)
            if window is not None and now - window.started < self.interval_s:
                window.suppressed += 1
                return False
            suppressed = window.suppressed if window is not None else 0
            self._windows[key] = _Window(now)
            if len(self._windows) > self.MAX_CLASSES:
                self._forget_expired(now)
        if suppressed:
            record.msg = f"{record.msg} ({suppressed} similar message{'s' if suppressed > 1 else ''} suppressed)"
            record.SUPPRESSED = suppressed
        return True

    def _forget_expired(self, now: float) -> None:
        self._windows = {key: window for key, window in self._windows.items()
                         if now - window.started < self.interval_s}


def journal_available() -> bool:
    """systemd-python is installed and journald's socket exists (a unit in a container may have neither)."""
    return _sd_journal is not None and os.path.exists(JOURNAL_SOCKET)


def configure_logging(level: str, *, rate_limit_s: float = 60.0) -> None:
    """Route every logger to the journal (systemd + systemd-python), or to stderr; rate-limit repeated warnings.

    Replaces the root logger's handlers, so calling it again (a reload) does not duplicate output.
    `rate_limit_s` 0 turns the rate limit off.
    """
    handler: logging.Handler
    service = under_systemd()
    if service and journal_available():
        assert _sd_journal is not None
        handler = _sd_journal.JournalHandler(SYSLOG_IDENTIFIER=SYSLOG_IDENTIFIER)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(SyslogPrefixFormatter("%(levelname)s %(name)s: %(message)s") if service
                             else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RateLimitFilter(rate_limit_s))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
