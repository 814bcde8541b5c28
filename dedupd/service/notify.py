"""Desktop notifications over the session D-Bus: one notification per import burst, updated in place.

Owns the daemon's org.freedesktop.Notifications client (DESIGN.md data flow step 7; requirement 35). The
pipeline's commit thread calls `record` after every committed batch; `record` only appends to a bounded queue.
One background thread turns the batches into bursts and talks to the bus, so a missing, slow or hung bus or
notification server costs notifications, never pipeline time.

A burst is a run of batches each arriving less than `burst_gap_s` after the previous one. A burst gets a
notification once it has a duplicate ("12 duplicates among 340 new photos in ~/Pictures/2026-11-23"); every
later change to the burst updates that notification in place (`replaces_id`), at most once per second, the
final state always sent. The photo count covers the whole run, including batches before its first duplicate.

Library: jeepney (pure Python, no dependencies, maintained; its blocking API with per-call timeouts fits one
plain thread, and the daemon has no asyncio loop). dbus-fast and desktop-notifier are asyncio-first, and
dbus-fast brings compiled extensions, all for what is one method call. jeepney reads only
`DBUS_SESSION_BUS_ADDRESS` (dbus-fast has no `$XDG_RUNTIME_DIR/bus` fallback either), so that fallback, the
session bus of systemd user sessions, is ours.

No action buttons: an action needs a listener for ActionInvoked and a way to open something in the user's
session from a daemon; the body instead says where the report is and names `dedupctl duplicates`, which every
server shows. Body text is escaped for servers that announce `body-markup`, so file names show as written.
"""

import html
import logging
import os
import re
import socket
import stat
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jeepney import DBusAddress, DBusErrorResponse, MessageGenerator, new_method_call  # type: ignore[import-untyped]
from jeepney.io.blocking import DBusConnection, Proxy, open_dbus_connection  # type: ignore[import-untyped]

from dedupd.pathnames import is_under
from dedupd.records import Match

log = logging.getLogger(__name__)

NOTIFICATIONS = DBusAddress(
    "/org/freedesktop/Notifications", bus_name="org.freedesktop.Notifications",
    interface="org.freedesktop.Notifications",
)
#: D-Bus errors that mean no notification server owns (or can be activated for) the name.
NO_SERVER_ERRORS = frozenset({"org.freedesktop.DBus.Error.ServiceUnknown", "org.freedesktop.DBus.Error.NameHasNoOwner"})
#: A notification is updated at most this often per burst (coalesced; the latest state wins).
UPDATE_INTERVAL_S = 1.0
#: How long one bus call may take before the server counts as not answering.
CALL_TIMEOUT_S = 5.0
#: At stop, how long the last update of a burst may take; a hung bus is then cut off.
FINAL_CALL_TIMEOUT_S = 1.0
#: Batches waiting for the notification thread; beyond this `record` drops and counts them.
QUEUE_LIMIT = 1024
URGENCY_NORMAL = 1
#: Characters that would end a key or value in a D-Bus address (spec: "Server Addresses").
_ADDRESS_SPECIALS = re.compile(r"[,;=%]")


class BusUnavailable(Exception):
    """No session bus to connect to (no address, no socket, refused, or unsupported transport)."""


class _Notifications(MessageGenerator):
    """The two methods of the Desktop Notifications Specification that dedupd calls (D-Bus names)."""

    interface = NOTIFICATIONS.interface

    def __init__(self) -> None:
        super().__init__(object_path=NOTIFICATIONS.object_path, bus_name=NOTIFICATIONS.bus_name)

    def GetCapabilities(self) -> Any:
        return new_method_call(self, "GetCapabilities")

    def Notify(self, app_name: str, replaces_id: int, app_icon: str, summary: str, body: str,
               hints: Mapping[str, tuple[str, Any]]) -> Any:
        return new_method_call(self, "Notify", "susssasa{sv}i",
                               (app_name, replaces_id, app_icon, summary, body, [], dict(hints), -1))


def session_bus_address(environ: Mapping[str, str]) -> str:
    """`DBUS_SESSION_BUS_ADDRESS`, else the systemd user bus socket `$XDG_RUNTIME_DIR/bus` if it exists."""
    address = environ.get("DBUS_SESSION_BUS_ADDRESS", "")
    if address:
        return address
    runtime_dir = environ.get("XDG_RUNTIME_DIR", "")
    if not runtime_dir:
        raise BusUnavailable("neither DBUS_SESSION_BUS_ADDRESS nor XDG_RUNTIME_DIR is set")
    path = os.path.join(runtime_dir, "bus")
    try:
        is_socket = stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError as error:
        raise BusUnavailable(f"DBUS_SESSION_BUS_ADDRESS is not set and {path}: {error.strerror}") from None
    if not is_socket:
        raise BusUnavailable(f"DBUS_SESSION_BUS_ADDRESS is not set and {path} is not a socket")
    return "unix:path=" + _ADDRESS_SPECIALS.sub(lambda special: f"%{ord(special[0]):02x}", path)


def _describe(error: DBusErrorResponse) -> str:
    """"name: message" (jeepney's str() shows the reply body as a tuple)."""
    return ": ".join([error.name or "D-Bus error", *(str(part) for part in error.data[:1])])


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


@dataclass(frozen=True, slots=True)
class Batch:
    """One committed batch as `record` (or the daemon's duplicate log) saw it; `at` is when it arrived (monotonic)."""

    at: float
    added: tuple[str, ...]
    duplicates: dict[str, Sequence[Match]]
    reports: dict[str, Path]

    @classmethod
    def of(cls, at: float, added: Sequence[str], duplicates: Mapping[str, Sequence[Match]],
           reports: Mapping[str, Path]) -> "Batch | None":
        """The batch of one commit, None when it added nothing and found no duplicate (nothing to say)."""
        return cls(at, tuple(added), dict(duplicates), dict(reports)) if added or duplicates else None


@dataclass(slots=True)
class Burst:
    """What one notification says, and what of it the server has already been told."""

    last_batch_at: float
    photos: int = 0
    duplicates: int = 0
    directory: str | None = None
    latest: tuple[str, Match] | None = None  # the most recent file that arrived with duplicates, and one match
    report: Path | None = None
    changes: int = 0  # bumped on every visible change; `shown` is the value the server last saw
    shown: int = 0
    notification_id: int = 0
    last_sent_at: float = field(default=-float("inf"))

    def absorb(self, batch: Batch) -> None:
        paths = set(batch.added).union(batch.duplicates)
        self.last_batch_at = batch.at
        self.photos += len(paths)
        self.duplicates += len(batch.duplicates)
        directories = {os.path.dirname(path) for path in paths}
        self.directory = os.path.commonpath([*directories, *([self.directory] if self.directory else [])])
        for path, matches in batch.duplicates.items():
            if matches:
                self.latest = path, next((m for m in matches if m.method == "exact"), matches[0])
            self.report = batch.reports.get(path, self.report)
        if self.duplicates:
            self.changes += 1

    @property
    def pending(self) -> bool:
        return self.duplicates > 0 and self.changes != self.shown

    def describe(self, display: Callable[[str], str]) -> list[str]:
        """What the burst found, in lines: counts and folder, the latest example, where to look (`display`
        shortens paths, e.g. the home directory as ~). The notification's body, and the daemon's INFO line."""
        lines = [f"{_plural(self.duplicates, 'duplicate')} among {_plural(self.photos, 'new photo')}"
                 f" in {display(self.directory or '/')}"]
        if self.latest is not None:
            path, match = self.latest
            same_folder = os.path.dirname(path) == os.path.dirname(match.path)
            original = os.path.basename(match.path) if same_folder else display(match.path)
            relation = "is a copy of" if match.method == "exact" else "looks like"
            lines.append(f"{os.path.basename(path)} {relation} {original}")
        where = f"report: {display(str(self.report))}; " if self.report is not None else ""
        lines.append(f"{where}all duplicates: dedupctl duplicates")
        return lines


#: What `_next` returns when the current burst's pending update is due (compared by identity).
_DELIVER = Batch(0.0, (), {}, {})


class DesktopNotifier:
    """Best-effort desktop notifications for duplicate bursts; see the module docstring."""

    def __init__(self, *, burst_gap_s: float = 10.0, retry_s: float = 60.0, app_name: str = "dedupd",
                 environ: Mapping[str, str] | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        """`clock` (seconds, monotonic) dates batches and paces updates: tests pass one they can move on."""
        self._clock = clock
        self._burst_gap_s = burst_gap_s
        self._retry_s = retry_s
        self._app_name = app_name
        self._environ = os.environ if environ is None else environ
        # Shared with `record`, `stop` and `stats` (under `_wakeup`).
        self._wakeup = threading.Condition()
        self._batches: deque[Batch] = deque()
        self._dropped = 0
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._connection: DBusConnection | None = None
        self._state = "disabled"
        self._sent = 0
        self._failed = 0
        # The notification thread's own.
        self._burst: Burst | None = None
        self._capabilities: frozenset[str] | None = None
        self._retry_at = -float("inf")
        self._logged: set[str] = set()

    def start(self) -> None:
        """Start the notification thread; it connects at once so a missing bus or server is logged early."""
        with self._wakeup:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="dedupd-notify", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Send the current burst's last update if the bus is up (bounded), then end the thread."""
        with self._wakeup:
            self._stopping = True
            self._wakeup.notify()
            thread = self._thread
        if thread is None:
            return
        thread.join(FINAL_CALL_TIMEOUT_S + 0.5)
        if thread.is_alive():  # stuck in a bus call: cut the connection under it
            with self._wakeup:
                connection = self._connection
            if connection is not None:
                try:
                    connection.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass  # already closed by the thread
            thread.join(FINAL_CALL_TIMEOUT_S)
        if thread.is_alive():
            log.warning("desktop notification thread did not stop; leaving it behind (daemon thread)")
        with self._wakeup:
            self._state = "disabled"

    def record(self, added: Sequence[str], duplicates: Mapping[str, Sequence[Match]],
               reports: Mapping[str, Path]) -> None:
        """Queue one committed batch for the notification thread; never waits for it or for the bus."""
        batch = Batch.of(self._clock(), added, duplicates, reports)
        if batch is None:
            return
        with self._wakeup:
            if self._stopping:
                return
            if len(self._batches) >= QUEUE_LIMIT:
                if not self._dropped:
                    log.warning("desktop notifications fall behind; dropping batches (counts will be low)")
                self._dropped += 1
                return
            self._batches.append(batch)
            self._wakeup.notify()

    def stats(self) -> dict[str, Any]:
        """Notifications sent and failed, batches dropped, and the connection state."""
        with self._wakeup:
            return {"sent": self._sent, "failed": self._failed, "dropped": self._dropped, "state": self._state}

    # The notification thread ---------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._probe()
            while (batch := self._next()) is not None:
                if batch is _DELIVER:
                    self._deliver(CALL_TIMEOUT_S)
                else:
                    self._absorb(batch)
            if self._burst is not None and self._burst.pending and self._connection is not None:
                self._deliver(FINAL_CALL_TIMEOUT_S)
        except Exception:  # a bug here must not take anything else down; notifications just stop
            log.exception("desktop notifications stopped after an unexpected error")
        finally:
            self._disconnect()

    def _next(self) -> Batch | None:
        """Wait for the next thing to do: a batch to absorb, `_DELIVER` when an update is due, None at stop."""
        with self._wakeup:
            while True:
                now = self._clock()
                if self._stopping:
                    for batch in self._batches:  # their counts belong in the last update
                        self._absorb(batch)
                    self._batches.clear()
                    return None
                due = self._update_due()
                if due is not None and due <= now:
                    return _DELIVER
                if self._batches and not self._holds_back(self._batches[0], now):
                    return self._batches.popleft()
                self._wakeup.wait(None if due is None else due - now)

    def _update_due(self) -> float | None:
        """When the current burst's pending update may go out (rate limit, retry back-off), or None."""
        if self._burst is None or not self._burst.pending:
            return None
        return max(self._burst.last_sent_at + UPDATE_INTERVAL_S, self._retry_at)

    def _holds_back(self, batch: Batch, now: float) -> bool:
        """Whether `batch`, which would start a new burst, must wait for the current burst's last update. It
        waits out the rate limit only: while the bus or server is failing, the new burst supersedes the old."""
        burst = self._burst
        return (burst is not None and burst.pending and batch.at - burst.last_batch_at >= self._burst_gap_s
                and self._retry_at <= now)

    def _absorb(self, batch: Batch) -> None:
        if self._burst is None or batch.at - self._burst.last_batch_at >= self._burst_gap_s:
            self._burst = Burst(last_batch_at=batch.at)
        self._burst.absorb(batch)

    def _probe(self) -> None:
        """Connect and ask the server's capabilities, so that problems show in the log at startup."""
        try:
            self._server_capabilities(self._connect(), CALL_TIMEOUT_S)
        except Exception as error:
            self._failure(error, counts=False)

    def _deliver(self, timeout: float) -> None:
        burst = self._burst
        assert burst is not None
        changes = burst.changes
        try:
            connection = self._connect()
            body = self._body(burst)
            if "body-markup" in self._server_capabilities(connection, timeout):
                body = html.escape(body, quote=False)
            (notification_id,) = Proxy(_Notifications(), connection, timeout=timeout).Notify(
                self._app_name, burst.notification_id, "edit-copy",
                f"{self._app_name}: {_plural(burst.duplicates, 'duplicate')} found", body,
                {"urgency": ("y", URGENCY_NORMAL)},
            )
        except Exception as error:
            self._failure(error, counts=True)
            return
        burst.notification_id = notification_id
        burst.shown = changes
        burst.last_sent_at = self._clock()
        if self._logged:
            log.info("desktop notifications are delivered again")
            self._logged.clear()
        with self._wakeup:
            self._sent += 1
            self._state = "connected"

    def _body(self, burst: Burst) -> str:
        return "\n".join(burst.describe(self._display))

    def _display(self, path: str) -> str:
        """`path` with the home directory shown as ~."""
        home = self._environ.get("HOME", "").rstrip("/")
        if home and is_under(path, home):
            return "~" + path[len(home):]
        return path

    def _connect(self) -> DBusConnection:
        if self._connection is not None:
            return self._connection
        address = session_bus_address(self._environ)
        try:
            connection = open_dbus_connection(address, auth_timeout=CALL_TIMEOUT_S)
        except (OSError, ValueError, RuntimeError) as error:  # refused, missing, auth failed, unknown transport
            raise BusUnavailable(f"{address}: {error}") from error
        with self._wakeup:
            self._connection = connection
            stopping = self._stopping
        if stopping:  # `stop` may have missed this connection: do not start a call it cannot cut off
            self._disconnect()
            raise BusUnavailable("stopping")
        return connection

    def _server_capabilities(self, connection: DBusConnection, timeout: float) -> frozenset[str]:
        if self._capabilities is None:
            (capabilities,) = Proxy(_Notifications(), connection, timeout=timeout).GetCapabilities()
            self._capabilities = frozenset(capabilities)
            with self._wakeup:
                self._state = "connected"
        return self._capabilities

    def _disconnect(self) -> None:
        with self._wakeup:
            connection, self._connection = self._connection, None
        self._capabilities = None
        if connection is not None:
            connection.close()

    def _failure(self, error: Exception, *, counts: bool) -> None:
        """Note a failed call: state, back-off, and one log line per kind of error until a delivery works."""
        self._retry_at = self._clock() + self._retry_s
        unexpected = False
        if isinstance(error, BusUnavailable):
            state, kind = "no_bus", "no_bus"
            text = f"desktop notifications disabled until a session bus appears: {error}"
        elif isinstance(error, DBusErrorResponse) and error.name in NO_SERVER_ERRORS:
            self._capabilities = None  # the next server may differ
            state, kind = "no_server", "no_server"
            text = f"no desktop notification server on the session bus: {_describe(error)}"
        elif isinstance(error, DBusErrorResponse):
            state, kind = "connected", error.name or "dbus-error"
            text = f"desktop notification refused by the server: {_describe(error)}"
        elif isinstance(error, TimeoutError):
            state, kind = "no_server", "timeout"
            text = "desktop notification server did not answer in time"
        else:  # the bus went away mid-call (OSError), or a bug: start over with a fresh connection
            self._disconnect()
            state, kind = "no_bus", type(error).__name__
            unexpected = not isinstance(error, OSError)
            text = f"desktop notifications failed: {error!r}" if unexpected else f"lost the session bus: {error!r}"
        with self._wakeup:
            stopping = self._stopping
            self._state = state
            if counts:
                self._failed += 1
        if kind not in self._logged and not stopping:  # at stop, a cut-off call is expected
            self._logged.add(kind)
            log.warning("%s (retrying every %g s)", text, self._retry_s, exc_info=error if unexpected else None)
