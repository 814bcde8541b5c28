"""The control socket server: owns the Unix socket (creation, permissions, peer check, limits), not the verbs.

The daemon passes one handler per verb (`protocol.VERBS`); this module parses and validates each request line,
calls the handler in its own thread under a time limit, and writes the reply. Nothing a client sends can stop
the server: bad lines get an error reply with a code, a failing handler gets "internal" and a logged traceback.

The socket file is created atomically (bound under a temporary name, chmod'ed, renamed into place), so it never
exists with looser permissions; a stale socket is replaced, a live one is refused. A lock file beside it
(`<socket>.lock`, flock) makes two daemons starting at once on the same path safe. With socket activation the
listening socket comes from systemd and is used as is.
"""

import contextlib
import logging
import os
import selectors
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, wait
from pathlib import Path
from typing import Any

from dedupd import __version__, lockfile, peer, protocol
from dedupd.errors import DedupdError
from dedupd.protocol import ErrorCode, ProtocolError

log = logging.getLogger(__name__)

type Handler = Callable[[dict[str, Any]], Mapping[str, Any]]

_RECV_BYTES = 1 << 16
_BACKLOG = 64
#: How long a refused client ("busy", "forbidden") gets to take its one reply.
_REFUSAL_SEND_S = 1.0


def _supplementary_groups(pid: int) -> set[int]:
    """The peer's supplementary groups from /proc (empty when the process is gone or not visible)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Groups:"):
                    return {int(group) for group in line.split()[1:]}
    except (OSError, ValueError):
        pass
    return set()


def _answers(path: str) -> bool:
    """Whether something accepts connections on the socket at `path` (False: stale, nobody listening)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            return False
        except OSError as exc:
            raise DedupdError(f"cannot tell whether another dedupd serves {path}: {exc.strerror or exc}") from None
    return True


class _TooLong(Exception):
    """A request line exceeded the limit; the connection cannot be resynchronised and is closed."""


class _TooSlow(Exception):
    """A request line took longer than the line timeout to arrive (a trickle); the connection is closed."""


class ControlServer:
    """Serves the control protocol on a Unix socket, one thread per client (at most `max_clients`).

    `handlers` maps verb names of `protocol.VERBS` to callables taking the validated args dict and returning
    the result document (a JSON-able mapping). A handler raises `protocol.ProtocolError(code, message)` to
    answer an error; any other exception is answered "internal" and logged. `hello` is answered built in.
    Requests of one connection are answered in order; a slow handler (wait-idle) delays only its own client.
    """

    def __init__(
        self,
        socket_path: str | os.PathLike[str],
        handlers: Mapping[str, Handler],
        *,
        allowed_gid: int | None = None,
        max_clients: int = 32,
        max_line: int = protocol.MAX_LINE_BYTES,
        request_timeout_s: float = protocol.REQUEST_TIMEOUT_S,
        idle_timeout_s: float = 60.0,
        line_timeout_s: float = protocol.LINE_TIMEOUT_S,
        listen_fd: int | None = None,
    ) -> None:
        unknown = sorted(set(handlers) - set(protocol.VERBS))
        if unknown:
            raise ValueError(f"handlers for verbs the protocol does not have: {', '.join(unknown)}")
        self.path = os.fspath(socket_path)
        self._handlers: dict[str, Handler] = {"hello": self._hello, **handlers}
        self._allowed_gid = allowed_gid
        self._max_line = max_line
        self._request_timeout_s = request_timeout_s
        self._idle_timeout_s = idle_timeout_s
        self._line_timeout_s = line_timeout_s
        self._listen_fd = listen_fd
        self._uid = os.geteuid()
        self._client_slots = threading.BoundedSemaphore(max_clients)
        # Handlers that outlived their time limit keep running; bounding them too keeps threads bounded.
        self._handler_slots = threading.BoundedSemaphore(max_clients)
        self._clients: dict[socket.socket, threading.Thread] = {}
        #: Since when each client has been waited for (None while its request is being answered): when every
        #: slot is taken, the one waited for longest makes room, so idle clients can never lock others out.
        self._waiting_since: dict[socket.socket, float | None] = {}
        self._clients_lock = threading.Lock()
        self._stopping = threading.Event()
        self._listener: socket.socket | None = None
        self._lock_fd: int | None = None
        self._bound_inode: tuple[int, int] | None = None
        self._wake_read = self._wake_write = -1
        self._acceptor: threading.Thread | None = None

    # ---- lifecycle ----

    def start(self) -> None:
        """Binds (or adopts the activated socket) now, so errors raise here; then serves in a background thread."""
        if self._listen_fd is not None:
            os.set_inheritable(self._listen_fd, False)  # exec'd children must not keep the socket alive
            listener = socket.socket(fileno=self._listen_fd)
            if listener.family != socket.AF_UNIX or listener.type != socket.SOCK_STREAM:
                raise DedupdError(f"the activated socket (fd {self._listen_fd}) is not a Unix stream socket")
            self.path = listener.getsockname()
        else:
            listener = self._bind()
        listener.setblocking(False)
        self._listener = listener
        self._wake_read, self._wake_write = os.pipe()
        self._acceptor = threading.Thread(target=self._accept_loop, name="control-accept", daemon=True)
        self._acceptor.start()
        log.info("control socket ready at %s", self.path)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stops accepting, removes the socket file (not an activated one), lets in-flight requests answer.

        Clients still connected get their current request answered and then EOF; requests they already sent
        are answered "unavailable". Waits up to `timeout_s` for client threads.
        """
        if self._acceptor is None or self._stopping.is_set():
            return
        self._stopping.set()
        os.write(self._wake_write, b"x")
        self._acceptor.join()
        if self._bound_inode is not None:
            with contextlib.suppress(OSError):
                st = os.lstat(self.path)
                if (st.st_dev, st.st_ino) == self._bound_inode:
                    os.unlink(self.path)
        assert self._listener is not None
        self._listener.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
        with self._clients_lock:
            clients = dict(self._clients)
        for conn in clients:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RD)
        deadline = time.monotonic() + timeout_s
        for thread in clients.values():
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning("control client thread %s still busy at shutdown", thread.name)
        os.close(self._wake_read)
        os.close(self._wake_write)

    def __enter__(self) -> "ControlServer":
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ---- socket file ----

    def _bind(self) -> socket.socket:
        """A listening socket at self.path, created atomically with its final permissions."""
        path = Path(self.path)
        try:
            self._lock_fd = self._lock(path)
        except OSError as exc:
            raise DedupdError(f"cannot create the control socket {path}: {exc.strerror or exc}") from None
        try:
            self._check_existing(path)
            listener = self._bind_temporary_then_rename(path)
            st = os.lstat(path)
        except BaseException:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise
        self._bound_inode = (st.st_dev, st.st_ino)
        return listener

    def _lock(self, path: Path) -> int:
        """The locked `<socket>.lock` (its directory created if missing): only one server per socket path."""
        try:
            path.parent.mkdir(mode=0o700 if self._allowed_gid is None else 0o750, parents=True)
        except FileExistsError:
            pass
        else:
            if self._allowed_gid is not None:
                os.chown(path.parent, -1, self._allowed_gid)
        self.check_directory(path)
        try:
            return lockfile.hold(f"{path}.lock", f"the control socket {path}")
        except lockfile.Locked as exc:
            holder = f" (pid {exc.pid})" if exc.pid is not None else ""
            raise DedupdError(f"another dedupd is already serving {path}{holder}") from None

    @staticmethod
    def check_directory(socket_path: str | os.PathLike[str]) -> None:
        """Refuse (DedupdError, saying why) a socket directory another user made or can write (`peer`); a
        directory that does not exist yet is fine (the server makes it)."""
        directory = Path(socket_path).parent
        if directory.exists():
            refusal = peer.socket_dir_refusal(directory, os.geteuid())
            if refusal is not None:
                raise DedupdError(f"not serving on {socket_path}: {refusal}")

    @staticmethod
    def _check_existing(path: Path) -> None:
        if not os.path.lexists(path):
            return
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise DedupdError(f"{path} exists and is not a socket; not replacing it")
        if _answers(str(path)):
            raise DedupdError(f"another dedupd is already serving {path}")
        log.info("replacing stale control socket %s", path)

    def _bind_temporary_then_rename(self, path: Path) -> socket.socket:
        temporary = path.parent / f".{path.name}.{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(str(temporary))
            if self._allowed_gid is None:
                os.chmod(temporary, 0o600)
            else:
                os.chown(temporary, -1, self._allowed_gid)
                os.chmod(temporary, 0o660)
            listener.listen(_BACKLOG)
            os.rename(temporary, path)
        except OSError as exc:
            listener.close()
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise DedupdError(f"cannot create the control socket {path}: {exc.strerror or exc}") from None
        return listener

    # ---- connections ----

    def _accept_loop(self) -> None:
        assert self._listener is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self._listener, selectors.EVENT_READ)
            selector.register(self._wake_read, selectors.EVENT_READ)
            while not self._stopping.is_set():
                for key, _ in selector.select():
                    if key.fileobj is self._listener:
                        self._accept_one()

    def _accept_one(self) -> None:
        assert self._listener is not None
        try:
            conn, _ = self._listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        except OSError as exc:  # EMFILE and friends: keep serving, but do not spin
            log.warning("control socket: cannot accept: %s", exc)
            self._stopping.wait(0.5)
            return
        if not self._client_slots.acquire(blocking=False) and not self._make_room():
            self._refuse(conn, ErrorCode.BUSY, "too many clients; try again later")
            return
        thread = threading.Thread(target=self._serve_client, args=(conn,), name=f"control-{conn.fileno()}",
                                  daemon=True)
        with self._clients_lock:
            self._clients[conn] = thread
        thread.start()

    def _make_room(self) -> bool:
        """Drop the client waited for longest (one sending nothing, or trickling) and take its slot."""
        with self._clients_lock:
            waiting = [(since, id(conn), conn) for conn, since in self._waiting_since.items() if since is not None]
        if not waiting:
            return False
        _, _, idlest = min(waiting)
        log.info("control socket: all client slots taken; dropping the client idle longest")
        with contextlib.suppress(OSError):
            idlest.shutdown(socket.SHUT_RDWR)
        return self._client_slots.acquire(timeout=_REFUSAL_SEND_S)

    @staticmethod
    def _refuse(conn: socket.socket, code: ErrorCode, message: str) -> None:
        with conn:
            conn.settimeout(_REFUSAL_SEND_S)
            with contextlib.suppress(OSError):
                conn.sendall(protocol.error_line(None, code, message))

    def _peer_refusal(self, conn: socket.socket) -> str | None:
        """Why this peer may not talk to the daemon, or None: its uid must be ours or root, or its group allowed."""
        pid, uid, gid = peer.credentials(conn)
        if uid in (0, self._uid):
            return None
        if self._allowed_gid is not None and (gid == self._allowed_gid or self._allowed_gid in
                                              _supplementary_groups(pid)):
            return None
        log.warning("control socket: refused uid %d gid %d (pid %d)", uid, gid, pid)
        return f"uid {uid} may not use this dedupd"

    def _serve_client(self, conn: socket.socket) -> None:
        try:
            with conn:
                refusal = self._peer_refusal(conn)
                if refusal is not None:
                    self._refuse(conn, ErrorCode.FORBIDDEN, refusal)
                    return
                try:
                    for line in self._lines(conn):
                        self._waiting(conn, None)
                        conn.sendall(self._answer(line))
                except _TooLong:
                    conn.sendall(protocol.error_line(
                        None, ErrorCode.TOO_LONG, f"request line longer than {self._max_line} bytes"))
                except _TooSlow as slow:
                    conn.settimeout(_REFUSAL_SEND_S)
                    conn.sendall(protocol.error_line(None, ErrorCode.TIMEOUT, str(slow)))
        except OSError as exc:  # idle timeout, peer gone, reset: the connection just ends
            log.debug("control client closed: %r", exc)
        finally:
            with self._clients_lock:
                self._clients.pop(conn, None)
                self._waiting_since.pop(conn, None)
            self._client_slots.release()

    def _waiting(self, conn: socket.socket, since: float | None) -> None:
        with self._clients_lock:
            self._waiting_since[conn] = since

    def _lines(self, conn: socket.socket) -> Iterator[bytes]:
        """Request lines as they arrive (blank ones skipped); a final unterminated line counts at EOF.

        A client may send nothing for `idle_timeout_s` (then the connection just ends), and a line must be
        complete within `line_timeout_s` of its first byte (`_TooSlow`): a trickle cannot hold a slot.
        """
        buffer = bytearray()
        started: float | None = None  # when the first byte of the pending line arrived
        self._waiting(conn, time.monotonic())
        while True:
            newline = buffer.find(b"\n")
            if newline < 0:
                if len(buffer) > self._max_line:
                    raise _TooLong
                now = time.monotonic()
                if buffer and started is None:  # blank lines count too: they are not requests
                    started = now
                wait = self._idle_timeout_s
                if started is not None:
                    wait = min(wait, started + self._line_timeout_s - now)
                    if wait <= 0:
                        raise _TooSlow(f"request line not complete within {self._line_timeout_s:g} s")
                conn.settimeout(wait)
                try:
                    chunk = conn.recv(_RECV_BYTES)
                except TimeoutError:
                    if started is not None and time.monotonic() >= started + self._line_timeout_s:
                        raise _TooSlow(f"request line not complete within {self._line_timeout_s:g} s") from None
                    raise
                if not chunk:
                    if buffer.strip():
                        yield bytes(buffer)
                    return
                buffer += chunk
                continue
            if newline > self._max_line:
                raise _TooLong
            line = bytes(buffer[:newline])
            del buffer[: newline + 1]
            if line.strip():
                started = None
                yield line
                self._waiting(conn, time.monotonic())

    # ---- requests ----

    def _answer(self, line: bytes) -> bytes:
        """The reply line for one request line; never raises."""
        request_id: protocol.RequestId | None = None
        cmd = "?"
        try:
            request = protocol.parse_request(line)
            request_id, cmd = request.id, request.cmd
            if self._stopping.is_set():
                raise ProtocolError(ErrorCode.UNAVAILABLE, "dedupd is stopping")
            args = protocol.validate(cmd, request.args)
            handler = self._handlers.get(cmd)
            if handler is None:
                raise ProtocolError(ErrorCode.UNKNOWN_COMMAND, f"this dedupd does not implement {cmd!r}")
            return protocol.ok_line(request_id, self._call(cmd, handler, args))
        except ProtocolError as exc:
            return protocol.error_line(exc.request_id if request_id is None else request_id, exc.code, exc.message)
        except Exception as exc:
            log.error("control: %s failed", cmd, exc_info=exc)
            return protocol.error_line(request_id, ErrorCode.INTERNAL, f"{cmd} failed: {exc}")

    def _call(self, cmd: str, handler: Handler, args: dict[str, Any]) -> Mapping[str, Any]:
        """The handler's result, run in its own thread so a handler that hangs costs a "timeout", not a client."""
        if not self._handler_slots.acquire(blocking=False):
            raise ProtocolError(ErrorCode.BUSY, "too many requests in progress; try again later")
        outcome: Future[Mapping[str, Any]] = Future()

        def run() -> None:
            try:
                outcome.set_result(handler(args))
            except Exception as exc:
                outcome.set_exception(exc)
            finally:
                self._handler_slots.release()

        threading.Thread(target=run, name=f"control-{cmd}", daemon=True).start()
        limit = protocol.time_limit(args, self._request_timeout_s)
        if not wait([outcome], timeout=limit).done:
            raise ProtocolError(ErrorCode.TIMEOUT, f"{cmd} did not finish within {limit:g} s")
        result = outcome.result()
        if not isinstance(result, Mapping):
            raise TypeError(f"the {cmd} handler returned {type(result).__name__}, not a mapping")
        return result

    @staticmethod
    def _hello(args: dict[str, Any]) -> Mapping[str, Any]:
        return {"protocol": protocol.PROTOCOL_VERSION, "version": __version__}
