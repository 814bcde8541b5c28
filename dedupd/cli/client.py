"""The control socket's client side: one request to a running dedupd and its result, or one plain sentence why
dedupd cannot be asked (`DaemonUnreachable`). Used by `dedupctl`, the review page's server and the tests; imports
only `protocol`, `peer`, `errors` and the stdlib, so `dedupctl` still starts fast."""

import os
import socket
from collections.abc import Mapping
from typing import Any

from dedupd import peer, protocol
from dedupd.errors import DedupdError

_RECV_BYTES = 1 << 16


class DaemonUnreachable(DedupdError):
    """dedupd could not be asked: no socket, nobody listening, no permission, no answer. One plain sentence."""


def _unreachable(socket_path: str, exc: OSError) -> DaemonUnreachable:
    if isinstance(exc, FileNotFoundError):
        return DaemonUnreachable(f"dedupd is not running (no socket at {socket_path}).")
    if isinstance(exc, ConnectionRefusedError):
        return DaemonUnreachable(f"dedupd is not running (nothing listens on {socket_path}).")
    if isinstance(exc, PermissionError):
        return DaemonUnreachable(f"cannot reach dedupd (permission denied on {socket_path}).")
    return DaemonUnreachable(f"cannot reach dedupd at {socket_path} ({exc.strerror or exc}).")


def _check_server(conn: socket.socket, socket_path: str) -> None:
    """Refuse a server that is not root, us, or the owner of a socket directory only it could have made."""
    pid, uid, _ = peer.credentials(conn)
    if uid not in peer.trusted_server_uids(socket_path, os.getuid()):
        raise DaemonUnreachable(
            f"not trusting {socket_path}: it is served by uid {uid} (pid {pid}), not by root, you, or the owner of "
            f"a socket directory only that owner could have made; another user may have taken the directory "
            f"({os.path.dirname(socket_path)}).")


def call(socket_path: str, cmd: str, args: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One request to the daemon; its result document.

    The args are validated here first (ProtocolError "bad_args", as the daemon would answer). Raises
    ProtocolError when the daemon answers an error, DaemonUnreachable when it cannot be asked. Waits for the
    reply a little longer than the daemon's own time limit, so the daemon's "timeout" answer comes first.
    """
    checked = protocol.validate(cmd, args or {})
    limit = protocol.time_limit(checked) + protocol.CLIENT_GRACE_S
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(limit)
        try:
            conn.connect(socket_path)
            _check_server(conn, socket_path)  # before the request: it must not reach an impostor either
            try:
                conn.sendall(protocol.request_line(1, cmd, checked))
            except (BrokenPipeError, ConnectionResetError):
                pass  # refused at once ("busy", "forbidden"): the refusal is still there to read
            chunks: list[bytes] = []
            while not chunks or not chunks[-1].endswith(b"\n"):
                chunk = conn.recv(_RECV_BYTES)
                if not chunk:
                    raise DaemonUnreachable(f"dedupd closed the connection without answering ({socket_path}).")
                chunks.append(chunk)
        except TimeoutError:
            raise DaemonUnreachable(f"dedupd did not answer within {limit:g} s ({socket_path}).") from None
        except OSError as exc:
            raise _unreachable(socket_path, exc) from None
    reply = protocol.parse_reply(b"".join(chunks))
    if reply.error is not None:
        raise reply.error
    assert reply.result is not None
    return reply.result
